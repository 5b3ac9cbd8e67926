package forward

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewDestinationsBuildsAdaptersThatDeliver(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	cfg := immediate(testConfig(t, filepath.Join(dir, "spool"), "always",
		[]string{"{name: local, type: ndjson, path: " + out + "}"}, ""))
	dests, err := NewDestinations(cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, pool := openTest(t, cfg, nil, dests...)
	appendIDs(t, s, pool, "fac1", "fac2")
	waitFor(t, "the spool to empty", func() bool { return s.events.Load() == 0 })
	closeSpool(t, s)
	b, err := os.ReadFile(filepath.Join(out, "events.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"fac1"`) || !strings.Contains(string(b), `"fac2"`) {
		t.Errorf("ndjson file: %s", b)
	}
}

func TestNewDestinationsRejectsUnknownTypeAndClosesBuilt(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "never", []string{
		"{name: local, type: ndjson, path: " + filepath.Join(dir, "ev") + "}",
		"{name: odd, type: carrier_pigeon}",
	}, "")
	if _, err := NewDestinations(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "carrier_pigeon") {
		t.Fatalf("err = %v", err)
	}
}
