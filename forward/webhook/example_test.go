package webhook_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
	"github.com/sidetrack/sidetrack/forward/webhook"
)

// The function below is the receiver-side check of
// docs/destinations/webhook.md, copied there verbatim
// (TestDocsMatchExamples keeps the two identical).

// VerifySignature checks an X-Sidetrack-Signature header against the raw
// request body (exactly as received: still gzip-compressed when the request
// has Content-Encoding: gzip) and rejects timestamps further than tolerance
// from now, so a captured request cannot be replayed later.
func VerifySignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("signature: missing timestamp")
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return errors.New("signature: timestamp outside tolerance")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("signature: no valid v1 signature")
}

// A receiver verifies the signature over the body as received, then
// decompresses and decodes it.
func Example_verifySignature() {
	const secret = "whsec-example"
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
		if err != nil {
			http.Error(w, "read failed", http.StatusBadRequest)
			return
		}
		if err := VerifySignature(secret, r.Header.Get("X-Sidetrack-Signature"), body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err == nil {
				body, err = io.ReadAll(zr)
			}
			if err != nil {
				http.Error(w, "bad gzip", http.StatusBadRequest)
				return
			}
		}
		var payload struct {
			Events []struct {
				EventID string `json:"event_id"`
				Name    string `json:"name"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &payload); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		for _, e := range payload.Events {
			fmt.Println("verified", e.EventID, e.Name)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	hook, err := webhook.New(config.Destination{
		Name:    "hook",
		Type:    config.TypeWebhook,
		Timeout: config.Duration(10 * time.Second),
		Options: config.DestinationX{URL: receiver.URL + "/hooks/sidetrack", Secret: secret, Gzip: true},
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer hook.Close()
	_, err = hook.Send(context.Background(), []*enrich.Event{
		{EventID: "e1", Name: "page_viewed", Source: enrich.SourceCollect},
		{EventID: "e2", Name: "order_completed", Source: enrich.SourceBackend},
	})
	fmt.Println("send error:", err)
	// Output:
	// verified e1 page_viewed
	// verified e2 order_completed
	// send error: <nil>
}
