package forward

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	at := time.UnixMilli(1750000000123)
	cases := []struct {
		name  string
		dests []string
		json  string
	}{
		{"one", []string{"local"}, `{"event_id":"a"}`},
		{"several", []string{"ga4", "meta", "hook"}, `{"event_id":"b","name":"x"}`},
		{"none", nil, `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := appendRecord(nil, at, tc.dests, []byte(tc.json))
			h, err := decodeRecordHeader(rec, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !h.appended.Equal(at) || len(h.dests) != len(tc.dests) || string(rec[h.jsonOff:]) != tc.json {
				t.Fatalf("decoded %+v, json %q", h, rec[h.jsonOff:])
			}
			for i, d := range tc.dests {
				if h.dests[i] != d {
					t.Errorf("dest %d = %q, want %q", i, h.dests[i], d)
				}
				idx, nd, app, off, err := recordDestIndex(rec, d)
				if err != nil || idx != i || nd != len(tc.dests) || !app.Equal(at) || off != h.jsonOff {
					t.Errorf("recordDestIndex(%q) = %d, %v, %d, %v", d, idx, app, off, err)
				}
			}
			if idx, _, _, _, _ := recordDestIndex(rec, "absent"); idx != -1 {
				t.Errorf("absent destination found at %d", idx)
			}
		})
	}
}

func TestDeadLetterAndRetryStateRoundTrip(t *testing.T) {
	dl := deadLetter{dead: time.UnixMilli(1750000000000), appended: time.UnixMilli(1749999990000), reason: "rejected",
		attempts: 3, status: 422, excerpt: "bad field", json: []byte(`{"event_id":"x"}`)}
	got, err := decodeDeadLetter(appendDeadLetter(nil, &dl))
	if err != nil {
		t.Fatal(err)
	}
	if !got.dead.Equal(dl.dead) || !got.appended.Equal(dl.appended) || got.reason != dl.reason ||
		got.attempts != 3 || got.status != 422 || got.excerpt != dl.excerpt || !bytes.Equal(got.json, dl.json) {
		t.Fatalf("got %+v", got)
	}
	rs := retryState{attempts: 2, next: time.UnixMilli(1750000005000), status: 503, excerpt: "busy"}
	gotRS, err := decodeRetryState(appendRetryState(nil, &rs))
	if err != nil || gotRS.attempts != 2 || !gotRS.next.Equal(rs.next) || gotRS.status != 503 || gotRS.excerpt != "busy" {
		t.Fatalf("got %+v, %v", gotRS, err)
	}
}

func TestDecodersRejectGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {}, {0}, {2, 1, 1}, {1, 0xff}, {1, 1, 200}, {1, 1, 1, 50, 'a'}} {
		if _, err := decodeRecordHeader(b, nil); err == nil {
			t.Errorf("record %x decoded", b)
		} else if !errors.Is(err, errBadRecord) {
			t.Errorf("record %x: %v is not errBadRecord", b, err)
		}
		if _, err := decodeDeadLetter(b); err == nil {
			t.Errorf("dead letter %x decoded", b)
		}
		if _, err := decodeRetryState(b); err == nil {
			t.Errorf("retry state %x decoded", b)
		}
	}
}

// FuzzDecodeRecord checks that no stored value, however damaged, makes a
// decoder panic, and that what decodes re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, time.UnixMilli(1), []string{"a", "b"}, []byte(`{"event_id":"x"}`)))
	f.Add(appendDeadLetter(nil, &deadLetter{reason: "r", json: []byte(`{}`)}))
	f.Add(appendRetryState(nil, &retryState{attempts: 1, excerpt: "e"}))
	f.Add([]byte{1, 0x80, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := decodeRecordHeader(b, nil); err == nil {
			again := appendRecord(nil, h.appended, h.dests, b[h.jsonOff:])
			if h2, err := decodeRecordHeader(again, nil); err != nil || len(h2.dests) != len(h.dests) {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
		}
		_, _, _, _, _ = recordDestIndex(b, "a")
		if dl, err := decodeDeadLetter(b); err == nil {
			if _, err := decodeDeadLetter(appendDeadLetter(nil, &dl)); err != nil {
				t.Fatalf("re-encoded dead letter does not decode: %v", err)
			}
		}
		_, _ = deadLetterTime(b)
		if rs, err := decodeRetryState(b); err == nil {
			if _, err := decodeRetryState(appendRetryState(nil, &rs)); err != nil {
				t.Fatalf("re-encoded retry state does not decode: %v", err)
			}
		}
	})
}
