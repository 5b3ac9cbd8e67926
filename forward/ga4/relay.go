package ga4

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"math"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/sidetrack/sidetrack/enrich"
)

// sendRelay posts the relay events of batch (w.relay) as /g/collect hits.
// Each event is encoded as gtag.js batches it: its page and session
// context (v, tid, cid, sid, dl, consent, …) in the query, its own
// parameters (en, ep.*, pr1…) as one body line. Events with the same
// context and User-Agent share a POST, one line each, up to 64 KiB of
// body; a line's parameters apply on top of the query's.
func (a *Adapter) sendRelay(ctx context.Context, w *work, batch []*enrich.Event, per []error) {
	w.buf, w.spans = w.buf[:0], w.spans[:0]
	for _, i := range w.relay {
		e := batch[i]
		name, _ := eventName(e) // check accepted it
		var sp span
		sp.ctx = len(w.buf)
		w.buf = a.appendRelayContext(w.buf, e)
		sp.ctxEnd, sp.line = len(w.buf), len(w.buf)
		w.buf, w.scratch = appendRelayLine(w.buf, w.scratch, e, name)
		sp.lineEnd = len(w.buf)
		sp.ua = e.Context.UserAgent
		w.spans = append(w.spans, sp)
	}
	w.done = append(w.done[:0], make([]bool, len(w.spans))...)
	for k := range w.spans {
		if w.done[k] {
			continue
		}
		kctx := w.buf[w.spans[k].ctx:w.spans[k].ctxEnd]
		w.idx = w.idx[:0]
		for j := k; j < len(w.spans); j++ {
			sj := &w.spans[j]
			if !w.done[j] && sj.ua == w.spans[k].ua && bytes.Equal(w.buf[sj.ctx:sj.ctxEnd], kctx) {
				w.idx = append(w.idx, j)
				w.done[j] = true
			}
		}
		target := a.relayURL + "?" + string(kctx[1:]) // the context starts with '&'
		ua := w.spans[k].ua
		if ua == "" {
			ua = userAgent
		}
		for start := 0; start < len(w.idx); {
			w.body = w.body[:0]
			end := start
			for ; end < len(w.idx); end++ {
				sp := &w.spans[w.idx[end]]
				line := w.buf[sp.line+1 : sp.lineEnd]
				if end > start && len(w.body)+2+len(line) > maxRelayBodyBytes {
					break
				}
				if end > start {
					w.body = append(w.body, '\r', '\n')
				}
				w.body = append(w.body, line...)
			}
			_, err := a.post(ctx, w, target, a.relayHost, "text/plain;charset=UTF-8", ua, w.body, 0)
			w.groups++
			for _, j := range w.idx[start:end] {
				per[w.relay[j]] = err
			}
			start = end
		}
	}
}

// appendRelayContext appends the event's page and session parameters,
// each as "&key=value", in gtag's order.
func (a *Adapter) appendRelayContext(b []byte, e *enrich.Event) []byte {
	b = append(b, "&v=2&tid="...)
	b = appendEscaped(b, a.mid)
	b = param(b, "gtm", e.GA.GTM)
	b = param(b, "_p", e.PageLoadID)
	c := &e.Consent
	b = appendGCS(b, c)
	b = appendGCD(b, c)
	b = param(b, "npa", npa(c))
	b = param(b, "cid", clientID(e))
	b = param(b, "ul", e.Context.Locale)
	b = param(b, "sr", e.Context.Screen)
	b = param(b, "_uip", a.clientIP(e))
	b = param(b, "uid", e.UserID)
	b = param(b, "sid", sessionID(e))
	if e.GASessionNumber > 0 {
		b = append(b, "&sct="...)
		b = strconv.AppendInt(b, e.GASessionNumber, 10)
	}
	if e.GA.SessionEngaged {
		b = append(b, "&seg=1"...)
	} else {
		b = append(b, "&seg=0"...)
	}
	b = param(b, "dl", e.URL)
	b = param(b, "dr", e.Referrer)
	b = param(b, "dt", e.Title)
	if at := &e.Attribution; at.UTMSource != "" && !strings.Contains(e.URL, "utm_") {
		// Campaign fields only where the page URL does not carry the
		// UTMs itself (server events, or a URL that lost them): GA reads
		// dl's, and an explicit cs would override them.
		b = param(b, "cs", at.UTMSource)
		b = param(b, "cm", at.UTMMedium)
		b = param(b, "cn", at.UTMCampaign)
		b = param(b, "ck", at.UTMTerm)
		b = param(b, "cc", at.UTMContent)
		b = param(b, "ci", at.UTMID)
	}
	if e.GA.Debug {
		b = append(b, "&_dbg=1"...)
	}
	return b
}

// appendRelayLine appends the event's own parameters, each as
// "&key=value". scratch is reused for item values.
func appendRelayLine(b, scratch []byte, e *enrich.Event, name string) ([]byte, []byte) {
	b = param(b, "en", name)
	if e.GA.FirstVisit {
		b = append(b, "&_fv=1"...)
	}
	if e.GA.SessionStart {
		b = append(b, "&_ss=1"...)
	}
	if e.HitSeq > 0 {
		b = append(b, "&_s="...)
		b = strconv.AppendInt(b, e.HitSeq, 10)
	}
	if e.GA.EngagementMS > 0 {
		b = append(b, "&_et="...)
		b = strconv.AppendInt(b, e.GA.EngagementMS, 10)
	}
	cm := &e.Commerce
	b = param(b, "cu", cm.Currency)
	for n := range cm.Items {
		if n >= maxItems {
			break
		}
		scratch = appendItem(scratch[:0], &cm.Items[n])
		b = append(b, "&pr"...)
		b = strconv.AppendInt(b, int64(n+1), 10)
		b = append(b, '=')
		b = appendEscaped(b, bytesView(scratch))
	}
	b = param(b, "ep.transaction_id", cm.TransactionID)
	b = numParam(b, "epn.value", cm.Value)
	b = numParam(b, "epn.tax", cm.Tax)
	b = numParam(b, "epn.shipping", cm.Shipping)
	b = param(b, "ep.coupon", cm.Coupon)
	b = param(b, "ep.event_id", e.EventID)
	b = appendProps(b, e.Properties, "ep.", "epn.")
	b = appendProps(b, e.UserProperties, "up.", "upn.")
	if e.Consent.AdUserData == enrich.Granted {
		var em [512]byte
		b = param(b, "em", bytesView(appendUserProvided(em[:0], &e.UserData.Google)))
	}
	return b, scratch
}

// appendProps appends custom parameters: strings and booleans under
// strPrefix, numbers under numPrefix, as gtag writes them.
func appendProps(b []byte, props enrich.Props, strPrefix, numPrefix string) []byte {
	for i := range props {
		p := &props[i]
		if p.Key == "" {
			continue
		}
		switch p.Kind {
		case enrich.PropNumber:
			if math.IsNaN(p.Num) || math.IsInf(p.Num, 0) {
				continue
			}
			b = append(b, '&')
			b = append(b, numPrefix...)
			b = appendEscaped(b, p.Key)
			b = append(b, '=')
			b = strconv.AppendFloat(b, p.Num, 'f', -1, 64)
		case enrich.PropBool:
			b = append(b, '&')
			b = append(b, strPrefix...)
			b = appendEscaped(b, p.Key)
			b = append(b, '=')
			b = strconv.AppendBool(b, p.Bool)
		default:
			b = append(b, '&')
			b = append(b, strPrefix...)
			b = appendEscaped(b, p.Key)
			b = append(b, '=')
			b = appendEscaped(b, p.Str)
		}
	}
	return b
}

// appendItem appends one prN value: two-letter keys and their values,
// '~'-separated, a literal '~' doubled.
func appendItem(b []byte, it *enrich.Item) []byte {
	field := func(b []byte, key, v string) []byte {
		if v == "" {
			return b
		}
		if len(b) > 0 {
			b = append(b, '~')
		}
		b = append(b, key...)
		for i := 0; i < len(v); i++ {
			if v[i] == '~' {
				b = append(b, '~')
			}
			b = append(b, v[i])
		}
		return b
	}
	num := func(b []byte, key string, v enrich.OptFloat) []byte {
		if !v.Set || math.IsNaN(v.V) || math.IsInf(v.V, 0) {
			return b
		}
		if len(b) > 0 {
			b = append(b, '~')
		}
		b = append(b, key...)
		return strconv.AppendFloat(b, v.V, 'f', -1, 64)
	}
	b = field(b, "id", it.ID)
	b = field(b, "nm", it.Name)
	b = field(b, "br", it.Brand)
	b = field(b, "ca", it.Category)
	b = field(b, "c2", it.Category2)
	b = field(b, "c3", it.Category3)
	b = field(b, "c4", it.Category4)
	b = field(b, "c5", it.Category5)
	b = field(b, "va", it.Variant)
	b = num(b, "pr", it.Price)
	b = num(b, "qt", it.Quantity)
	b = field(b, "cp", it.Coupon)
	b = num(b, "ds", it.Discount)
	b = field(b, "af", it.Affiliation)
	b = num(b, "lp", it.Index)
	b = field(b, "li", it.ListID)
	b = field(b, "ln", it.ListName)
	b = field(b, "lo", it.LocationID)
	return b
}

// appendUserProvided appends gtag's "em" value (user-provided data for
// enhanced conversions): "tv.1~em.<h>~pn.<h>~fn0.<h>~ln0.<h>~ct0.<h>~rg0.<h>~pc0.<h>",
// each <h> the SHA-256 as unpadded base64url. It appends nothing when no
// hash is present.
func appendUserProvided(b []byte, g *enrich.GoogleUserData) []byte {
	start := len(b)
	b = append(b, "tv.1"...)
	n := 0
	for _, f := range [...]struct{ tag, hexHash string }{
		{"em", g.EM}, {"pn", g.PH}, {"fn0", g.FN}, {"ln0", g.LN},
		{"ct0", g.CT}, {"rg0", g.ST}, {"pc0", g.ZP},
	} {
		var raw [32]byte
		if len(f.hexHash) != 64 {
			continue
		}
		if _, err := hex.Decode(raw[:], []byte(f.hexHash)); err != nil {
			continue
		}
		b = append(b, '~')
		b = append(b, f.tag...)
		b = append(b, '.')
		b = base64.RawURLEncoding.AppendEncode(b, raw[:])
		n++
	}
	if n == 0 {
		return b[:start]
	}
	return b
}

// clientIP returns the IP to send (relay _uip, MP ip_override): the full
// client IP when analytics consent is granted and the privacy policy kept
// it (sealed) and WithIPOpener was given; otherwise the truncated IP the
// policy kept (IPv4 /24, IPv6 /48: the precision GA itself keeps for
// geolocation); otherwise nothing, and GA then places the event where
// sidetrack's own address is.
func (a *Adapter) clientIP(e *enrich.Event) string {
	c := &e.Context
	if c.IP != "" && a.openIP != nil && e.Consent.Analytics == enrich.Granted {
		ip, err := a.openIP(c.IP)
		if err == nil {
			return ip.String()
		}
		a.log.Debug("sealed client IP did not open; sending the truncated one if any", zap.Error(err))
	}
	return c.IPTruncated
}

// appendGCS appends Consent Mode's gcs (G1<ad_storage><analytics_storage>)
// as the client sent it, unless sidetrack's decision for the event is
// more restrictive (a CMP cookie, GPC or the configured default denied
// what gcs granted): then the denied purposes are written as denied.
// Events without gcs get one made from the decision.
func appendGCS(b []byte, c *enrich.Consent) []byte {
	if len(c.GCS) == 4 && strings.HasPrefix(c.GCS, "G1") {
		b = append(b, "&gcs="...)
		start := len(b)
		b = appendEscaped(b, c.GCS)
		if len(b)-start == 4 {
			if c.Ads == enrich.Denied && b[start+2] == '1' {
				b[start+2] = '0'
			}
			if c.Analytics == enrich.Denied && b[start+3] == '1' {
				b[start+3] = '0'
			}
		}
		return b
	}
	if c.GCS != "" {
		return param(b, "gcs", c.GCS)
	}
	if c.Ads == enrich.Unknown && c.Analytics == enrich.Unknown {
		return b
	}
	return append(b, '&', 'g', 'c', 's', '=', 'G', '1', gcsDigit(c.Ads), gcsDigit(c.Analytics))
}

func gcsDigit(s enrich.ConsentState) byte {
	switch s {
	case enrich.Granted:
		return '1'
	case enrich.Denied:
		return '0'
	}
	return '-'
}

// appendGCD appends Consent Mode v2's gcd (a letter per purpose at
// positions 2, 4, 6, 8: ad_storage, analytics_storage, ad_user_data,
// ad_personalization) as sent, with purposes sidetrack denied turned to
// their denied letters; events without gcd get one made from the
// decision ('v' granted, 'q' denied, 'l' not set).
func appendGCD(b []byte, c *enrich.Consent) []byte {
	states := [4]enrich.ConsentState{c.Ads, c.Analytics, c.AdUserData, c.AdPersonalization}
	if c.GCD != "" {
		b = append(b, "&gcd="...)
		start := len(b)
		b = appendEscaped(b, c.GCD)
		if len(b)-start == len(c.GCD) { // nothing escaped: positions hold
			for k, st := range states {
				if pos := start + 2 + 2*k; st == enrich.Denied && pos < len(b) {
					b[pos] = deniedLetter(b[pos])
				}
			}
		}
		return b
	}
	if states == [4]enrich.ConsentState{} {
		return b
	}
	b = append(b, "&gcd=11"...)
	for k, st := range states {
		if k > 0 {
			b = append(b, '1')
		}
		switch st {
		case enrich.Granted:
			b = append(b, 'v')
		case enrich.Denied:
			b = append(b, 'q')
		default:
			b = append(b, 'l')
		}
	}
	return append(b, '5')
}

// deniedLetter maps a granted gcd letter to the denied one with the same
// history (n/m: update only; r/q: denied default; t, v/u: granted default).
func deniedLetter(c byte) byte {
	switch c {
	case 'n':
		return 'm'
	case 'r':
		return 'q'
	case 't', 'v':
		return 'u'
	}
	return c
}

// npa is gtag's npa as sent, or "1" when ad personalization is denied.
func npa(c *enrich.Consent) string {
	if c.AdPersonalization == enrich.Denied {
		return "1"
	}
	return c.NPA
}

// param appends "&key=value" when value is not empty.
func param(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, '&')
	b = append(b, key...)
	b = append(b, '=')
	return appendEscaped(b, value)
}

func numParam(b []byte, key string, v enrich.OptFloat) []byte {
	if !v.Set || math.IsNaN(v.V) || math.IsInf(v.V, 0) {
		return b
	}
	b = append(b, '&')
	b = append(b, key...)
	b = append(b, '=')
	return strconv.AppendFloat(b, v.V, 'f', -1, 64)
}

// appendEscaped percent-encodes s as JavaScript's encodeURIComponent
// does, which is how gtag.js writes every value ("%20" for a space, '~'
// and "!*'()" kept).
func appendEscaped(b []byte, s string) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
	}
	return b
}

// unreserved reports whether encodeURIComponent leaves c as it is.
func unreserved(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '!', '~', '*', '\'', '(', ')':
		return true
	}
	return false
}
