package main

import "strconv"

// Segment requests, modelled on the captures in /work/shared/fixtures
// (proxy/testdata/segment): analytics.js posts one event per request to
// /v1/t or /v1/p as text/plain JSON with the write key in the body; server
// SDKs (analytics-go, analytics-node) post /v1/batch with the write key as
// the HTTP Basic user and context once at batch level. messageId is the
// event id. No "Order Completed" with an order_id: orders are deduplicated
// by transaction, which would merge the bench's events.
const (
	segWriteKey = "bench-write-key"

	segTrackHead = `{"type":"track","event":"Product Viewed","properties":{"product_id":"SKU-1001","sku":"SKU-1001","name":"Linen shirt","price":39.99,"currency":"EUR","category":"Apparel"},` +
		`"anonymousId":"anon-7f3c2a10-5b1e-4c1a-9d8e-2f6b1c0a9e11","context":{"page":{"path":"/products/linen-shirt","referrer":"https://shop.example/shop/spring-sale","title":"Linen shirt - Example Shop","url":"https://shop.example/products/linen-shirt"},` +
		`"userAgent":"` + userAgent + `","locale":"en-US","library":{"name":"analytics.js","version":"next-1.81.0"}},` +
		`"writeKey":"` + segWriteKey + `","sentAt":"2026-11-23T13:37:42.301Z","timestamp":"2026-11-23T13:37:42.300Z","messageId":"`
	segPageHead = `{"type":"page","name":"Spring sale","properties":{"path":"/shop/spring-sale","url":"https://shop.example/shop/spring-sale","title":"Spring sale - Example Shop","referrer":"https://www.google.com/"},` +
		`"anonymousId":"anon-7f3c2a10-5b1e-4c1a-9d8e-2f6b1c0a9e11","context":{"page":{"path":"/shop/spring-sale","url":"https://shop.example/shop/spring-sale"},` +
		`"userAgent":"` + userAgent + `","library":{"name":"analytics.js","version":"next-1.81.0"}},` +
		`"writeKey":"` + segWriteKey + `","sentAt":"2026-11-23T13:37:41.101Z","timestamp":"2026-11-23T13:37:41.100Z","messageId":"`
	segSingleTail = `"}`

	// A server SDK batch of three events; {{ID}} becomes id-0, id-1, id-2.
	segBatchHead  = `{"batch":[`
	segBatchTrack = `{"type":"track","event":"Checkout Started","userId":"user-123","timestamp":"2026-11-23T13:37:43.152671826Z",` +
		`"properties":{"currency":"EUR","value":79.98,"products":[{"product_id":"SKU-1001","sku":"SKU-1001","name":"Linen shirt","price":39.99,"quantity":2}]},"messageId":"`
	segBatchPage = `{"type":"page","name":"Cart","userId":"user-123","timestamp":"2026-11-23T13:37:43.152670574Z","properties":{"url":"https://shop.example/cart","path":"/cart"},"messageId":"`
	segBatchTail = `],"context":{"library":{"name":"analytics-go","version":"3.0.0"}},"sentAt":"2026-11-23T13:37:48.154845704Z","messageId":"7e091cf4-a260-4986-b48e-6cb1a34d4278"}`
)

// segAuth is the server SDKs' Authorization header: the write key as the
// Basic user, no password (base64 of "bench-write-key:").
const segAuth = "Basic YmVuY2gtd3JpdGUta2V5Og=="

// segment fills s (kind, id and events already set) with a Segment
// request: half analytics.js single events, half server SDK batches.
func (wl *workload) segment(ws *workerState, s *spec) {
	s.method = "POST"
	if ws.rng.IntN(2) == 0 {
		s.ctype = "text/plain"
		head, path := segTrackHead, "/v1/t"
		if ws.rng.IntN(3) == 0 {
			head, path = segPageHead, "/v1/p"
		}
		s.uri = append(s.uri[:0], path...)
		s.body = append(append(append(s.body[:0], head...), s.id...), segSingleTail...)
		return
	}
	s.ctype, s.auth, s.events = "application/json", segAuth, 3
	s.uri = append(s.uri[:0], "/v1/batch"...)
	b := append(s.body[:0], segBatchHead...)
	for i, part := range []string{segBatchTrack, segBatchPage, segBatchTrack} {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(append(b, part...), s.id...), '-'), strconv.Itoa(i)...)
		b = append(b, `"}`...)
	}
	s.body = append(b, segBatchTail...)
}

// The forms scenario posts a contact form (urlencoded, as a browser does)
// to the form route of the bench config. Form events get fresh event ids
// from sidetrack, so the form carries a hidden bench_id field that the
// config maps to a property, which the counting destination reads instead.
const (
	formPath = "/contact"
	formHead = "name=Jane+Doe&email=jane.doe%40example.com&phone=%2B49+30+1234567&topic=order&message=" +
		"Hello%2C+my+order+has+not+arrived+yet.+Could+you+check%3F&bench_id="
	formTail = "&consent=on"
)
