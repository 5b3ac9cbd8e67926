package config

import (
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Print writes the effective config as YAML (what `sidetrack config print`
// shows). Every Secret prints as "[redacted]", and so does the user-info
// part of any URL (redis://:password@host), which holds credentials
// without being typed as a Secret.
func (c *Config) Print(w io.Writer) error {
	var doc yaml.Node
	if err := doc.Encode(c); err != nil {
		return fmt.Errorf("config print: %w", err)
	}
	redactUserinfo(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("config print: %w", err)
	}
	return enc.Close()
}

// redactUserinfo replaces "user:pass@" in every scalar that looks like a
// URL with "[redacted]@".
func redactUserinfo(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode {
		n.Value = redactURL(n.Value)
	}
	for _, c := range n.Content {
		redactUserinfo(c)
	}
}

func redactURL(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	host := s[i+3:]
	if end := strings.IndexAny(host, "/?#"); end >= 0 {
		host = host[:end]
	}
	at := strings.LastIndexByte(host, '@')
	if at < 0 {
		return s
	}
	return s[:i+3] + redacted + s[i+3+at:]
}
