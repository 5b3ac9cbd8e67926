package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// defaultsYAML is DESIGN §6's defaults; a string so it cannot be mutated.
//
//go:embed defaults.yaml
var defaultsYAML string

// Load reads the YAML file at path over the embedded defaults, applies the
// SIDETRACK_* overrides found in env (os.Environ() form, "KEY=value"), and
// fills per-destination defaults. path "" means the embedded defaults only.
// Load does not validate: set Dev, then call Validate.
func Load(path string, env []string) (*Config, error) {
	var data []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		data = b
	}
	cfg, err := Parse(data, env)
	if err != nil && path != "" {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, err
}

// Parse is Load for YAML already in memory (tests, -config -). Empty data
// means the embedded defaults only.
func Parse(data []byte, env []string) (*Config, error) {
	cfg := &Config{}
	if err := decodeYAML(cfg, []byte(defaultsYAML)); err != nil {
		return nil, fmt.Errorf("embedded defaults: %w", err)
	}
	if err := decodeYAML(cfg, data); err != nil {
		return nil, err
	}
	if err := applyEnv(cfg, env); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	return cfg, nil
}

// Default returns the embedded defaults (used by -demo and -dev, and as a
// base in tests). It cannot fail at run time: a test proves the embedded
// file loads and validates with Dev set, so the panic below is unreachable
// in a released binary.
func Default() *Config {
	cfg, err := Parse(nil, nil)
	if err != nil {
		panic("config: embedded defaults do not load: " + err.Error())
	}
	return cfg
}

// decodeYAML decodes one YAML document over cfg. Sections merge key by
// key (yaml.v3 keeps struct fields the document does not mention), lists
// replace, maps merge. Unknown keys are errors.
func decodeYAML(cfg *Config, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return cleanYAMLError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return cleanYAMLError(err)
	default:
		return fmt.Errorf("line %d: a config file holds exactly one YAML document", extra.Line)
	}
}

var (
	// yamlValueRE matches the value excerpt yaml.v3 puts in type errors
	// (" `abcdefg...`"): dropped, because a secret pasted under the wrong
	// key would otherwise leak into logs. The line number locates it.
	yamlValueRE = regexp.MustCompile(" `[^`]*`")
	// yamlUnknownRE rewrites KnownFields' message into the words users know.
	yamlUnknownRE = regexp.MustCompile(`^(line \d+): field (.*) not found in type (\S+)$`)
)

// cleanYAMLError rewrites yaml.v3 type errors: values removed, unknown-key
// messages in config terms. It stays a *yaml.TypeError for errors.As.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	out := make([]string, len(te.Errors))
	for i, msg := range te.Errors {
		msg = yamlValueRE.ReplaceAllString(msg, "")
		msg = yamlUnknownRE.ReplaceAllString(msg, `$1: unknown key "$2" (no such field in $3)`)
		out[i] = msg
	}
	return &yaml.TypeError{Errors: out}
}

// Per-destination defaults, applied to fields still zero after the file and
// the environment, so a destination only spells out what differs.
const (
	defaultBatchMaxEvents   = 500
	defaultBatchMaxBytes    = Size(1 << 20)
	defaultBatchMaxWait     = Duration(time.Second)
	defaultRetryMaxAttempts = 20
	defaultRetryMaxAge      = Duration(24 * time.Hour)
	defaultRetryMaxBackoff  = Duration(5 * time.Minute)
	defaultBacklogMaxBytes  = Size(1 << 30)
	defaultBacklogMaxAge    = Duration(7 * 24 * time.Hour)
	defaultTimeout          = Duration(10 * time.Second)
	defaultGA4Mode          = "relay"
	defaultMetaAPIVersion   = "v21.0"
)

// applyDefaults fills per-destination and per-form defaults. Zero means
// "use the default" for these keys: YAML cannot tell an absent key from a
// zero one once decoded, and none of them is useful at zero. It also
// lower-cases hosts, so that every consumer can compare them with the
// lower-cased request Host.
func (c *Config) applyDefaults() {
	for i, h := range c.Hosts {
		c.Hosts[i] = strings.ToLower(h)
	}
	for i := range c.Destinations {
		c.Destinations[i].applyDefaults()
	}
	for i := range c.Ingest.Forms {
		f := &c.Ingest.Forms[i]
		// DESIGN §2: success is a 2xx, or a 3xx not back to the form itself.
		if len(f.Success.Status) == 0 {
			f.Success.Status = []string{"200-299", "300-399"}
		}
		if f.Success.NotLocation == "" {
			f.Success.NotLocation = f.Path
		}
	}
}

func (d *Destination) applyDefaults() {
	setIfZero(&d.Batch.MaxEvents, defaultBatchMaxEvents)
	setIfZero(&d.Batch.MaxBytes, defaultBatchMaxBytes)
	setIfZero(&d.Batch.MaxWait, defaultBatchMaxWait)
	setIfZero(&d.Retry.MaxAttempts, defaultRetryMaxAttempts)
	setIfZero(&d.Retry.MaxAge, defaultRetryMaxAge)
	setIfZero(&d.Retry.MaxBackoff, defaultRetryMaxBackoff)
	setIfZero(&d.Backlog.MaxBytes, defaultBacklogMaxBytes)
	setIfZero(&d.Backlog.MaxAge, defaultBacklogMaxAge)
	setIfZero(&d.Timeout, defaultTimeout)
	switch d.Type {
	case TypeGA4:
		setIfZero(&d.Options.Mode, defaultGA4Mode)
	case TypeMetaCAPI:
		setIfZero(&d.Options.APIVersion, defaultMetaAPIVersion)
	}
}

func setIfZero[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}
