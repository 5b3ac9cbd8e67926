package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/forward/kafkaspool"
	"github.com/sidetrack/sidetrack/proxy"
)

const dlqUsage = `usage:
  sidetrack dlq list          [-config FILE]
  sidetrack dlq show DEST     [-config FILE] [-limit N]
  sidetrack dlq replay DEST   [-config FILE] [-since DURATION]
  sidetrack dlq purge DEST    [-config FILE]
When sidetrack is running, these go through its admin API (admin.listen;
replay and purge need admin.token). When it is stopped, they open the spool.`

const quarantineUsage = `usage:
  sidetrack quarantine list   [-config FILE]
  sidetrack quarantine show   [-config FILE] [-limit N]`

// dlqCmd implements `sidetrack dlq list|show|replay|purge`.
func dlqCmd(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, dlqUsage)
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (default: embedded defaults and env)")
	limit := fs.Int("limit", 100, "show: how many dead letters, oldest first")
	sinceFlag := fs.String("since", "", "replay: only those dead-lettered within this duration (e.g. 24h, 7d); default all")
	pos, ok := parseInterleaved(fs, args[1:])
	if !ok {
		return 2
	}
	wantDest := sub == "show" || sub == "replay" || sub == "purge"
	switch {
	case sub != "list" && !wantDest:
		fmt.Fprintf(stderr, "sidetrack dlq: unknown command %q\n%s\n", sub, dlqUsage)
		return 2
	case wantDest && len(pos) != 1, !wantDest && len(pos) != 0:
		fmt.Fprintln(stderr, dlqUsage)
		return 2
	}
	var since time.Duration
	if *sinceFlag != "" {
		d, err := config.ParseDuration(*sinceFlag)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, "sidetrack dlq: -since: want a positive duration such as 24h or 7d\n")
			return 2
		}
		since = d.D()
	}
	dl, done, err := openDeadLetters(*cfgPath, env, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer done()
	switch sub {
	case "list":
		counts, err := dl.DLQList()
		if err != nil {
			return fail(stderr, err)
		}
		names := make([]string, 0, len(counts))
		for n := range counts {
			names = append(names, n)
		}
		slices.Sort(names)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DESTINATION\tDEAD LETTERS")
		for _, n := range names {
			fmt.Fprintf(tw, "%s\t%d\n", n, counts[n])
		}
		_ = tw.Flush()
	case "show":
		if err := dl.DLQShow(pos[0], *limit, stdout); err != nil {
			return fail(stderr, err)
		}
	case "replay":
		n, err := dl.DLQReplay(pos[0], since)
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "replayed %d dead letters of %s; they are delivered again (when sidetrack runs)\n", n, pos[0])
	case "purge":
		n, err := dl.DLQPurge(pos[0])
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "purged %d dead letters of %s\n", n, pos[0])
	}
	return 0
}

// quarantineCmd implements `sidetrack quarantine list|show`.
func quarantineCmd(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "show") {
		fmt.Fprintln(stderr, quarantineUsage)
		return 2
	}
	fs := flag.NewFlagSet("quarantine "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (default: embedded defaults and env)")
	limit := fs.Int("limit", 100, "show: how many events, oldest first")
	pos, ok := parseInterleaved(fs, args[1:])
	if !ok || len(pos) != 0 {
		fmt.Fprintln(stderr, quarantineUsage)
		return 2
	}
	dl, done, err := openDeadLetters(*cfgPath, env, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer done()
	if args[0] == "list" {
		n, err := dl.QuarantineList()
		if err != nil {
			return fail(stderr, err)
		}
		fmt.Fprintf(stdout, "%d quarantined events\n", n)
		return 0
	}
	if err := dl.QuarantineShow(*limit, stdout); err != nil {
		return fail(stderr, err)
	}
	return 0
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, err)
	return 1
}

// parseInterleaved parses flags before and after positional arguments
// ("dlq show ga4 -limit 5" as well as "dlq show -limit 5 ga4").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			return pos, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// openDeadLetters opens the spool directly, or, when a running sidetrack
// holds its lock, returns a client of that process's admin API.
func openDeadLetters(cfgPath string, env []string, stderr io.Writer) (proxy.DeadLetters, func(), error) {
	cfg, err := config.Load(cfgPath, env)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Spool.Type == "kafka" {
		return nil, nil, fmt.Errorf("spool.type is kafka: dead letters are in the topics %s and quarantined events in %s (docs/deployment.md)",
			kafkaspool.DLQTopic(cfg.Spool.Topic, "<destination>"), kafkaspool.QuarantineTopic(cfg.Spool.Topic))
	}
	sp, err := forward.Open(cfg, nil, zap.NewNop(), nil, forward.WithLockTimeout(300*time.Millisecond))
	if err == nil {
		return sp, func() { _ = sp.Close(context.Background()) }, nil
	}
	if !errors.Is(err, forward.ErrLocked) {
		return nil, nil, err
	}
	c := newAdminDLQ(cfg)
	fmt.Fprintf(stderr, "sidetrack is running (the spool is locked); using its admin API at %s\n", c.base)
	return c, func() { c.hc.CloseIdleConnections() }, nil
}

// adminDLQ implements proxy.DeadLetters over the admin API routes of
// proxy.HandleDeadLetters.
type adminDLQ struct {
	base  string
	token string
	hc    *http.Client
}

func newAdminDLQ(cfg *config.Config) *adminDLQ {
	host, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		host, port = cfg.Admin.Listen, ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return &adminDLQ{
		base:  "http://" + net.JoinHostPort(host, port),
		token: cfg.Admin.Token.Reveal(),
		hc:    &http.Client{Timeout: time.Minute, Transport: &http.Transport{}},
	}
}

func (c *adminDLQ) do(method, path string, q url.Values, out io.Writer) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimSpace(string(b))
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			msg += " (the CLI sends admin.token from the config; check it matches the running sidetrack)"
		case http.StatusNotFound:
			msg += " (no such destination, or the running sidetrack has no DLQ API)"
		}
		return fmt.Errorf("admin API %s %s: %s: %s", method, path, resp.Status, msg)
	}
	_, err = io.Copy(out, resp.Body)
	return err
}

func (c *adminDLQ) json(method, path string, q url.Values, v any) error {
	var b strings.Builder
	if err := c.do(method, path, q, &b); err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(b.String()), v); err != nil {
		return fmt.Errorf("admin API %s: unexpected answer: %w", path, err)
	}
	return nil
}

func (c *adminDLQ) DLQList() (map[string]int, error) {
	var v struct {
		Destinations map[string]int `json:"destinations"`
	}
	err := c.json(http.MethodGet, "/dlq", nil, &v)
	return v.Destinations, err
}

func (c *adminDLQ) DLQShow(dest string, limit int, w io.Writer) error {
	return c.do(http.MethodGet, "/dlq/"+url.PathEscape(dest), url.Values{"limit": {fmt.Sprint(limit)}}, w)
}

func (c *adminDLQ) DLQReplay(dest string, since time.Duration) (int, error) {
	q := url.Values{}
	if since > 0 {
		q.Set("since", fmt.Sprintf("%ds", int64(since.Seconds())))
	}
	var v struct {
		Replayed int `json:"replayed"`
	}
	err := c.json(http.MethodPost, "/dlq/"+url.PathEscape(dest)+"/replay", q, &v)
	return v.Replayed, err
}

func (c *adminDLQ) DLQPurge(dest string) (int, error) {
	var v struct {
		Purged int `json:"purged"`
	}
	err := c.json(http.MethodPost, "/dlq/"+url.PathEscape(dest)+"/purge", nil, &v)
	return v.Purged, err
}

func (c *adminDLQ) QuarantineList() (int, error) {
	var v struct {
		Events int `json:"events"`
	}
	err := c.json(http.MethodGet, "/quarantine", nil, &v)
	return v.Events, err
}

func (c *adminDLQ) QuarantineShow(limit int, w io.Writer) error {
	return c.do(http.MethodGet, "/quarantine/show", url.Values{"limit": {fmt.Sprint(limit)}}, w)
}
