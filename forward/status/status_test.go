package status

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestFromHTTP(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		code                         int
		ra                           string
		retry, perm, pause, tooLarge bool
		wait                         time.Duration
	}{
		{code: 200}, {code: 204},
		{code: 408, retry: true}, {code: 425, retry: true},
		{code: 429, ra: "7", retry: true, wait: 7 * time.Second},
		{code: 429, ra: "Mon, 23 Nov 2026 12:00:30 GMT", retry: true, wait: 30 * time.Second},
		{code: 503, ra: "garbage", retry: true},
		{code: 500, retry: true}, {code: 502, retry: true}, {code: 504, retry: true}, {code: 599, retry: true},
		{code: 501, perm: true}, {code: 505, perm: true},
		{code: 400, perm: true}, {code: 404, perm: true}, {code: 422, perm: true}, {code: 302, perm: true},
		{code: 401, pause: true}, {code: 403, pause: true},
		{code: 413, tooLarge: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code, tt.ra), func(t *testing.T) {
			err := FromHTTP(tt.code, tt.ra, now, "body")
			if tt.code < 300 {
				if err != nil {
					t.Fatalf("2xx gave %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not a *Error: %v", err)
			}
			if e.Retryable() != tt.retry || e.Permanent() != tt.perm || e.Paused() != tt.pause || e.TooLarge() != tt.tooLarge {
				t.Errorf("class: retry=%v perm=%v pause=%v tooLarge=%v", e.Retryable(), e.Permanent(), e.Paused(), e.TooLarge())
			}
			if e.RetryAfter() != tt.wait {
				t.Errorf("wait = %v, want %v", e.RetryAfter(), tt.wait)
			}
		})
	}
}

func TestNetwork(t *testing.T) {
	if Network(nil) != nil {
		t.Fatal("nil")
	}
	if err := Network(context.Canceled); !errors.Is(err, context.Canceled) {
		t.Fatal("cancel must pass through")
	}
	var e *Error
	if !errors.As(Network(errors.New("connection reset")), &e) || !e.Retryable() {
		t.Fatal("network errors are retryable")
	}
	if !Permanent(errors.New("x")).(*Error).Permanent() {
		t.Fatal("Permanent")
	}
}

func TestExcerpt(t *testing.T) {
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'a'
	}
	if got := Excerpt(string(long)); len(got) != 256 {
		t.Errorf("len %d", len(got))
	}
	if got := Excerpt("a\nb\x00c\xffd"); got != "a bcd" {
		t.Errorf("got %q", got)
	}
}
