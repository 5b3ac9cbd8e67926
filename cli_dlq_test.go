package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward"
	"github.com/sidetrack/sidetrack/proxy"
)

// rejecting is a destination that refuses every event permanently, to
// fill a DLQ.
type rejecting struct{}

type rejectErr struct{}

func (rejectErr) Error() string   { return "HTTP 400: bad event" }
func (rejectErr) Permanent() bool { return true }

func (rejecting) Name() string                  { return "hook" }
func (rejecting) Limits() forward.Limits        { return forward.Limits{} }
func (rejecting) GroupKey(*enrich.Event) string { return "" }
func (rejecting) Prepare(*enrich.Event) error   { return nil }
func (rejecting) Close() error                  { return nil }
func (rejecting) Send(context.Context, []*enrich.Event) ([]error, error) {
	return nil, rejectErr{}
}

// dlqFixture writes a config whose admin port is addr and fills the DLQ
// of "hook" with n events.
func dlqFixture(t *testing.T, addr, token string, n int) (string, *config.Config) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sidetrack.yaml")
	yaml := fmt.Sprintf(`admin: {listen: %q, token: %q}
spool: {dir: %q, fsync: never}
destinations:
  - {name: hook, type: webhook, url: "http://127.0.0.1:9/", batch: {max_wait: 1ms}}
`, addr, token, filepath.Join(dir, "spool"))
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := forward.Open(cfg, []forward.Destination{rejecting{}}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pool := &enrich.EventPool{}
	for i := 0; i < n; i++ {
		e := pool.Get()
		e.EventID = fmt.Sprintf("dl-%d", i)
		e.Name = "order_completed"
		if err := sp.Append(context.Background(), []*enrich.Event{e}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := sp.DLQList()
		if err == nil && m["hook"] == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DLQ not filled: %v %v", m, err)
		}
		time.Sleep(time.Millisecond)
	}
	if err := sp.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

func cli(t *testing.T, cmd func(args, env []string, stdout, stderr io.Writer) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmd(args, nil, &out, &errb)
	return code, out.String(), errb.String()
}

func TestDLQCommandsOnAStoppedSpool(t *testing.T) {
	path, _ := dlqFixture(t, "127.0.0.1:0", "", 3)
	steps := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"list", "-config", path}, 0, "hook         3"},
		{[]string{"show", "hook", "-config", path, "-limit", "2"}, 0, `"event_id":"dl-1"`},
		{[]string{"show", "-config", path, "nope"}, 1, ""},
		{[]string{"replay", "hook", "-config", path, "-since", "7d"}, 0, "replayed 3 dead letters of hook"},
		{[]string{"list", "-config", path}, 0, "hook         0"},
		{[]string{"purge", "hook", "-config", path}, 0, "purged 0"},
		{[]string{"replay", "-config", path}, 2, ""},
		{[]string{"frobnicate", "-config", path}, 2, ""},
		{[]string{"replay", "hook", "-config", path, "-since", "soon"}, 2, ""},
	}
	for _, st := range steps {
		code, out, errOut := cli(t, dlqCmd, st.args...)
		if code != st.code || !strings.Contains(out, st.contains) {
			t.Errorf("dlq %v: exit %d (want %d)\nstdout: %s\nstderr: %s", st.args, code, st.code, out, errOut)
		}
	}
	if code, out, _ := cli(t, dlqCmd, "show", "hook", "-config", path); code != 0 || strings.Count(out, "\n") != 0 {
		t.Errorf("after replay the DLQ shows %q", out)
	}
	if code, out, _ := cli(t, quarantineCmd, "list", "-config", path); code != 0 || !strings.Contains(out, "0 quarantined events") {
		t.Errorf("quarantine list: %d %q", code, out)
	}
}

func TestDLQCommandsThroughTheAdminAPIWhileRunning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	path, cfg := dlqFixture(t, ln.Addr().String(), "adm1n", 2)

	// A "running sidetrack": the spool open (and locked) and the admin API.
	sp, err := forward.Open(cfg, nil, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close(context.Background())
	cfg.Origin = "http://127.0.0.1:9"
	srv, err := proxy.New(cfg, zap.NewNop(), proxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv.HandleDeadLetters(sp)
	go func() { _ = srv.ServeAdmin(ln) }()
	defer srv.ShutdownAdmin(context.Background())

	code, out, errOut := cli(t, dlqCmd, "list", "-config", path)
	if code != 0 || !strings.Contains(out, "hook         2") || !strings.Contains(errOut, "admin API") {
		t.Fatalf("list while running: %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if code, out, _ := cli(t, dlqCmd, "show", "hook", "-limit", "1", "-config", path); code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("show while running: %d %q", code, out)
	}
	if code, out, errOut := cli(t, dlqCmd, "replay", "hook", "-since", "1h", "-config", path); code != 0 || !strings.Contains(out, "replayed 2") {
		t.Errorf("replay while running: %d %q %q", code, out, errOut)
	}
	if code, out, _ := cli(t, quarantineCmd, "list", "-config", path); code != 0 || !strings.Contains(out, "0 quarantined") {
		t.Errorf("quarantine list while running: %d %q", code, out)
	}

	// A wrong token is refused with a hint.
	var o, e bytes.Buffer
	if code := dlqCmd([]string{"purge", "hook", "-config", path}, []string{"SIDETRACK_ADMIN__TOKEN=wrong"}, &o, &e); code != 1 ||
		!strings.Contains(e.String(), "401") {
		t.Errorf("purge with a wrong token: %d %q", code, e.String())
	}
}
