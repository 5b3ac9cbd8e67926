package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// fakeDeadLetters records calls and serves fixed data.
type fakeDeadLetters struct {
	mu      sync.Mutex
	replays []string
	purges  []string
	fail    error
}

func (f *fakeDeadLetters) DLQList() (map[string]int, error) {
	return map[string]int{"hook": 2, "removed": 1}, f.fail
}

func (f *fakeDeadLetters) DLQShow(dest string, limit int, w io.Writer) error {
	if f.fail != nil {
		return f.fail
	}
	for i := 0; i < min(limit, 2); i++ {
		fmt.Fprintf(w, `{"destination":%q,"id":%d}`+"\n", dest, i+1)
	}
	return nil
}

func (f *fakeDeadLetters) DLQReplay(dest string, since time.Duration) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replays = append(f.replays, fmt.Sprintf("%s/%s", dest, since))
	return 2, f.fail
}

func (f *fakeDeadLetters) DLQPurge(dest string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.purges = append(f.purges, dest)
	return 2, f.fail
}

func (f *fakeDeadLetters) QuarantineList() (int, error) { return 3, f.fail }

func (f *fakeDeadLetters) QuarantineShow(limit int, w io.Writer) error {
	_, err := fmt.Fprintf(w, `{"reason":"invalid","limit":%d}`+"\n", limit)
	return err
}

func httpDo(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: guard}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDeadLetterRoutes(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Admin.Token = config.Secret("tok")
	cfg.Destinations = []config.Destination{{Name: "hook", Type: "webhook"}}
	dl := &fakeDeadLetters{}
	p := startProxy(t, cfg, Options{}, func(s *Server) { s.HandleDeadLetters(dl) })
	base := "http://" + p.adminAddr
	cases := []struct {
		method, path, token string
		want                int
		contains            string
	}{
		{"GET", "/dlq", "", 401, ""},
		{"GET", "/dlq", "tok", 200, `"destinations":{"hook":2,"removed":1},"quarantine":3`},
		{"GET", "/dlq/hook", "tok", 200, `{"destination":"hook","id":2}`},
		{"GET", "/dlq/hook?limit=1", "tok", 200, `"id":1}`},
		{"GET", "/dlq/hook?limit=0", "tok", 400, "limit"},
		{"GET", "/dlq/removed", "tok", 200, `"destination":"removed"`},
		{"GET", "/dlq/nope", "tok", 404, ""},
		{"GET", "/dlq/hook/replay", "tok", 405, "POST"},
		{"POST", "/dlq/hook/replay", "", 401, ""},
		{"POST", "/dlq/hook/replay?since=24h", "tok", 200, `{"replayed":2}`},
		{"POST", "/dlq/hook/replay?since=7d", "tok", 200, `{"replayed":2}`},
		{"POST", "/dlq/hook/replay?since=soon", "tok", 400, "since"},
		{"POST", "/dlq/hook/purge", "tok", 200, `{"purged":2}`},
		{"GET", "/quarantine", "tok", 200, `{"events":3}`},
		{"GET", "/quarantine/show?limit=5", "tok", 200, `"limit":5`},
	}
	for _, tc := range cases {
		code, body := httpDo(t, tc.method, base+tc.path, tc.token)
		if code != tc.want || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s: %d %q, want %d containing %q", tc.method, tc.path, code, body, tc.want, tc.contains)
		}
	}
	if got := strings.Join(dl.replays, ","); got != "hook/24h0m0s,hook/168h0m0s" {
		t.Errorf("replays %s", got)
	}
	if got := strings.Join(dl.purges, ","); got != "hook" {
		t.Errorf("purges %s", got)
	}
}

func TestDeadLetterChangesNeedAConfiguredToken(t *testing.T) {
	o := newOrigin(t, nil)
	cfg := testConfig(o.URL)
	cfg.Destinations = []config.Destination{{Name: "hook", Type: "webhook"}}
	dl := &fakeDeadLetters{}
	p := startProxy(t, cfg, Options{}, func(s *Server) { s.HandleDeadLetters(dl) })
	base := "http://" + p.adminAddr
	if code, _ := httpDo(t, "GET", base+"/dlq", ""); code != 200 {
		t.Errorf("reading without a configured token: %d, want 200", code)
	}
	for _, path := range []string{"/dlq/hook/replay", "/dlq/hook/purge"} {
		if code, body := httpDo(t, "POST", base+path, ""); code != 403 || !strings.Contains(body, "admin.token") {
			t.Errorf("POST %s without a configured token: %d %q, want 403", path, code, body)
		}
	}
	if len(dl.replays)+len(dl.purges) != 0 {
		t.Error("a change went through without a token")
	}
	dl.fail = errors.New("disk on fire")
	if code, body := httpDo(t, "GET", base+"/dlq/hook", ""); code != 500 || !strings.Contains(body, "disk on fire") {
		t.Errorf("failing show: %d %q", code, body)
	}
}
