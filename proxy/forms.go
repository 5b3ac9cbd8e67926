package proxy

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strings"
	"time"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// formMaxValue bounds one extracted form value. Longer values (a pasted
// essay in a mapped textarea) are skipped rather than cut, since half a
// value is worse than none for ids and PII.
const formMaxValue = collectMaxText

// formValue is one mapped field of a submitted form.
type formValue struct {
	// Field is the event field it feeds: a key of config.Form.Fields.
	Field string
	// Value is the submitted value, copied out of the body.
	Value string
}

// formFields appends to dst the mapped fields found in a form body: fields
// maps event field → form field name (config.Form.Fields). Content types:
// application/x-www-form-urlencoded and multipart/form-data.
//
// body is the prefix of the upload that the proxy kept while streaming it
// to the origin; truncated says the upload was longer. Fields found before
// the cut are used; a value the cut may have shortened is dropped. File
// parts are skipped without being read into memory of their own. The
// first non-empty value of a field wins.
//
// The error is non-nil only when the body cannot be parsed at all (another
// content type, no multipart boundary); a body that breaks off or goes bad
// midway yields what was found before, since the form post itself is the
// origin's business and the event is best effort.
func formFields(dst []formValue, contentType, body []byte, truncated bool, fields map[string]string) ([]formValue, error) {
	mt, params, err := mime.ParseMediaType(string(contentType))
	if err != nil {
		return dst, errors.New("form: unparsable content type")
	}
	switch mt {
	case "application/x-www-form-urlencoded":
		return urlencodedFields(dst, body, truncated, fields), nil
	case "multipart/form-data":
		boundary := params["boundary"]
		if boundary == "" {
			return dst, errors.New("form: multipart body without a boundary")
		}
		return multipartFields(dst, body, boundary, fields), nil
	}
	return dst, errors.New("form: unsupported content type " + mt)
}

// urlencodedFields parses name=value&… pairs.
func urlencodedFields(dst []formValue, body []byte, truncated bool, fields map[string]string) []formValue {
	if truncated {
		// Only pairs followed by '&' are known to be whole.
		i := bytes.LastIndexByte(body, '&')
		if i < 0 {
			return dst
		}
		body = body[:i]
	}
	for len(body) > 0 {
		var pair []byte
		pair, body, _ = bytes.Cut(body, []byte{'&'})
		k, v, _ := bytes.Cut(pair, []byte{'='})
		if len(v) == 0 || len(v) > 3*formMaxValue {
			continue
		}
		name, err := url.QueryUnescape(string(k))
		if err != nil || !wantedForm(fields, name) {
			continue
		}
		val, err := url.QueryUnescape(string(v))
		if err != nil {
			continue
		}
		dst = addFormValue(dst, fields, name, val)
	}
	return dst
}

// multipartFields reads form-data parts until the body ends or breaks off.
func multipartFields(dst []formValue, body []byte, boundary string, fields map[string]string) []formValue {
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		// NextRawPart: no quoted-printable decoding, which browsers never
		// use for form-data; NextPart would also buffer nothing more.
		p, err := r.NextRawPart()
		if err != nil {
			return dst // io.EOF, or the cut: stop with what we have
		}
		name := p.FormName()
		if p.FileName() != "" || !wantedForm(fields, name) {
			// The next NextRawPart call skips the rest of this part.
			continue
		}
		val, err := io.ReadAll(io.LimitReader(p, formMaxValue+1))
		if err != nil || len(val) > formMaxValue {
			// io.ErrUnexpectedEOF: the body ends inside this value, so
			// it may be cut short. Later parts cannot be whole either.
			if err != nil {
				return dst
			}
			continue
		}
		dst = addFormValue(dst, fields, name, string(val))
	}
}

// wantedForm reports whether a form field is mapped to any event field.
func wantedForm(fields map[string]string, name string) bool {
	for _, f := range fields {
		if f == name {
			return true
		}
	}
	return false
}

// addFormValue records value for every event field mapped to form field
// name that has no value yet.
func addFormValue(dst []formValue, fields map[string]string, name, value string) []formValue {
	if value == "" || len(value) > formMaxValue {
		return dst
	}
next:
	for ev, f := range fields {
		if f != name {
			continue
		}
		for _, have := range dst {
			if have.Field == ev {
				continue next
			}
		}
		dst = append(dst, formValue{Field: ev, Value: value})
	}
	return dst
}

// formSucceeded reports whether the origin's answer to a form post counts
// as a successful submission (DESIGN §2): the status is in rule.Status
// (default 2xx or 3xx), and a redirect does not lead back to the form
// itself — that is the form re-displayed with validation errors.
// rule.NotLocation defaults to formPath. location is the raw Location
// header, absolute or relative; only its path is compared, resolved
// against the form's path.
func formSucceeded(rule config.FormSuccess, formPath string, status int, location []byte) bool {
	if len(rule.Status) == 0 {
		rule.Status = []string{"200-299", "300-399"}
	}
	if !rule.Accepts(status, "") {
		return false
	}
	if status < 300 || status > 399 {
		return true
	}
	back := rule.NotLocation
	if back == "" {
		back = formPath
	}
	if back == "" || len(location) == 0 {
		return true
	}
	u, err := url.Parse(strings.TrimSpace(string(location)))
	if err != nil {
		// A redirect we cannot read cannot be shown to leave the form.
		return false
	}
	base := &url.URL{Path: formPath}
	if formPath == "" {
		base.Path = "/"
	}
	return !formSamePath(base.ResolveReference(u).Path, back)
}

// formSamePath compares URL paths, ignoring a trailing slash.
func formSamePath(a, b string) bool {
	if len(a) > 1 {
		a = strings.TrimSuffix(a, "/")
	}
	if len(b) > 1 {
		b = strings.TrimSuffix(b, "/")
	}
	return a == b
}

// buildFormEvent adds the event of a successful form post to d: named
// f.Event, source form, with the mapped fields. PII fields (email, phone,
// first_name, last_name, city, state, zip, country, date_of_birth, gender,
// external_id) go to the transient e.PII for the privacy stage; value,
// currency and transaction_id to commerce; any other mapped name becomes a
// string property. pageURL is the page the form was on (the post's
// Referer); referrer, when known, is that page's own referrer. A value
// that is not a number is recorded as a problem on the event.
func buildFormEvent(d *decoded, f config.Form, fields []formValue, pageURL, referrer []byte, now time.Time) *enrich.Event {
	e := d.next()
	e.Source = enrich.SourceForm
	e.Name = e.InternString(f.Event)
	e.OriginalName = e.Name
	e.ReceivedAt = now
	e.OccurredAt = now
	setPage(e, pageURL)
	e.Referrer = e.Intern(referrer)
	for _, fv := range fields {
		if dst := rawPIIField(&e.PII, fv.Field); dst != nil {
			*dst = e.InternString(fv.Value)
			continue
		}
		switch fv.Field {
		case "value":
			v, ok := parseDecimal([]byte(strings.TrimSpace(fv.Value)))
			if !ok {
				d.problem(e.Index, "value", collectMsgNumber)
				continue
			}
			e.Commerce.Value = enrich.Some(v)
		case "currency":
			e.Commerce.Currency = e.InternString(strings.TrimSpace(fv.Value))
		case "transaction_id":
			e.Commerce.TransactionID = e.InternString(strings.TrimSpace(fv.Value))
		default:
			e.Properties.Set(enrich.Prop{
				Key:  e.InternString(fv.Field),
				Kind: enrich.PropString,
				Str:  e.InternString(fv.Value),
			})
		}
	}
	return e
}
