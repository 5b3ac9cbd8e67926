package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime/multipart"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/config"
	"github.com/sidetrack/sidetrack/enrich"
)

// contactFields is a typical ingest.forms[].fields map: event field → form
// field name.
var contactFields = map[string]string{
	"email":      "your-email",
	"first_name": "fname",
	"phone":      "tel",
	"topic":      "subject",
	"value":      "budget",
}

func sortedFormValues(v []formValue) []formValue {
	v = slices.Clone(v)
	slices.SortFunc(v, func(a, b formValue) int { return strings.Compare(a.Field, b.Field) })
	return v
}

func TestFormFieldsURLEncoded(t *testing.T) {
	const ct = "application/x-www-form-urlencoded"
	tests := []struct {
		name      string
		ct        string
		body      string
		truncated bool
		fields    map[string]string
		want      []formValue
	}{
		{"mapped fields, escapes and pluses", ct,
			"fname=Jane+Q.&your-email=jane%40example.com&message=Hello+there&subject=Kitchen+%26+bath&_token=abc",
			false, contactFields, []formValue{
				{"email", "jane@example.com"}, {"first_name", "Jane Q."}, {"topic", "Kitchen & bath"},
			}},
		{"charset parameter", ct + "; charset=UTF-8", "your-email=a%40b.c", false, contactFields,
			[]formValue{{"email", "a@b.c"}}},
		{"first non-empty value wins", ct, "tel=&tel=%2B4930123&tel=999", false, contactFields,
			[]formValue{{"phone", "+4930123"}}},
		{"one form field feeding two event fields", ct, "mail=a%40b.c", false,
			map[string]string{"email": "mail", "external_id": "mail"},
			[]formValue{{"email", "a@b.c"}, {"external_id", "a@b.c"}}},
		{"bad escapes are skipped", ct, "your-email=%zz&fname=Jane", false, contactFields,
			[]formValue{{"first_name", "Jane"}}},
		{"a key without value", ct, "your-email&fname=Jane&", false, contactFields,
			[]formValue{{"first_name", "Jane"}}},
		{"truncated: the last pair may be cut and is dropped", ct, "fname=Jane&your-email=jane%40exa", true, contactFields,
			[]formValue{{"first_name", "Jane"}}},
		{"truncated right after a separator keeps everything", ct, "fname=Jane&tel=123&", true, contactFields,
			[]formValue{{"first_name", "Jane"}, {"phone", "123"}}},
		{"truncated with no separator yields nothing", ct, "your-email=jane%40example.com", true, contactFields, nil},
		{"empty body", ct, "", false, contactFields, nil},
		{"no mapping", ct, "fname=Jane", false, nil, nil},
		{"an over-long value is skipped", ct, "fname=" + strings.Repeat("a", formMaxValue+1) + "&tel=1", false, contactFields,
			[]formValue{{"phone", "1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := formFields(nil, []byte(tt.ct), []byte(tt.body), tt.truncated, tt.fields)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := sortedFormValues(got), sortedFormValues(tt.want); !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// multipartBody builds a browser-like multipart/form-data body with a
// file part between the fields.
func multipartBody(t testing.TB, file []byte) (contentType string, body []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.WriteField("fname", "Jane"))
	must(w.WriteField("your-email", "jane@example.com"))
	fw, err := w.CreateFormFile("subject", "cv.pdf") // a file under a mapped name is still skipped
	must(err)
	_, err = fw.Write(file)
	must(err)
	must(w.WriteField("message", "Call me\r\nplease"))
	must(w.WriteField("tel", "+49 30 1234567"))
	must(w.Close())
	return w.FormDataContentType(), b.Bytes()
}

func TestFormFieldsMultipart(t *testing.T) {
	ct, body := multipartBody(t, bytes.Repeat([]byte("%PDF-1.7 binary\x00\xff"), 100))
	full := []formValue{{"first_name", "Jane"}, {"email", "jane@example.com"}, {"phone", "+49 30 1234567"}}

	got, err := formFields(nil, []byte(ct), body, false, contactFields)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, full) {
		t.Fatalf("got %q, want %q", got, full)
	}

	// Cut anywhere: every value found is whole, and the fields come in
	// order, so what is found is a prefix of the full result.
	fileStart := bytes.Index(body, []byte("%PDF"))
	for n := 0; n <= len(body); n++ {
		got, err := formFields(nil, []byte(ct), body[:n], n < len(body), contactFields)
		if err != nil {
			t.Fatalf("cut at %d: %v", n, err)
		}
		if len(got) > len(full) || !slices.Equal(got, full[:len(got)]) {
			t.Fatalf("cut at %d: got %q, want a prefix of %q", n, got, full)
		}
		if n > fileStart && n < fileStart+100 && len(got) != 2 {
			t.Fatalf("cut inside the file part at %d: got %q, want the two fields before it", n, got)
		}
	}
}

func TestFormFieldsSkipsFilesWithoutBuffering(t *testing.T) {
	file := bytes.Repeat([]byte{0xAB}, 4<<20)
	ct, body := multipartBody(t, file)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := formFields(nil, []byte(ct), body, false, contactFields)
	runtime.ReadMemStats(&after)
	if err != nil || len(got) != 3 {
		t.Fatalf("got %q, %v", got, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("allocated %d bytes for a body with a %d-byte file: the file part was buffered", alloc, len(file))
	}
}

func TestFormFieldsErrors(t *testing.T) {
	for _, ct := range []string{
		"application/json",
		"text/plain",
		"multipart/form-data",     // no boundary
		"multipart/form-data; x=", // unparsable
		"",
	} {
		if _, err := formFields(nil, []byte(ct), []byte(`{"email":"a@b.c"}`), false, contactFields); err == nil {
			t.Errorf("content type %q: no error", ct)
		}
	}
	// A broken multipart body is not an error: whatever came before counts.
	got, err := formFields(nil, []byte("multipart/form-data; boundary=xyz"), []byte("garbage"), false, contactFields)
	if err != nil || len(got) != 0 {
		t.Fatalf("garbage multipart: %q, %v", got, err)
	}
}

func TestFormSucceeded(t *testing.T) {
	var def config.FormSuccess // not filled by config.Load: the defaults apply
	loaded := config.FormSuccess{Status: []string{"200-299", "300-399"}, NotLocation: "/contact"}
	only303 := config.FormSuccess{Status: []string{"303"}}
	thanks := config.FormSuccess{Status: []string{"200-299", "302"}, NotLocation: "/contact/retry"}
	tests := []struct {
		name     string
		rule     config.FormSuccess
		status   int
		location string
		want     bool
	}{
		{"200", def, 200, "", true},
		{"204", loaded, 204, "", true},
		{"303 to /thanks", def, 303, "/thanks", true},
		{"302 to an absolute /thanks", def, 302, "https://shop.example/thanks?ref=contact", true},
		{"302 back to /contact", def, 302, "/contact", false},
		{"302 back to /contact with a query", loaded, 302, "/contact?error=email", false},
		{"302 back to an absolute /contact", def, 302, "https://shop.example/contact", false},
		{"302 back to /contact/ (trailing slash)", def, 302, "/contact/", false},
		{"302 to a relative query: the form itself", def, 302, "?sent=0", false},
		{"302 to a relative sibling", def, 302, "thanks", true},
		{"302 to ./contact relative", def, 302, "./contact", false},
		{"301 with no Location", def, 301, "", true},
		{"302 with an unreadable Location", def, 302, "http://[::1", false},
		{"400", def, 400, "", false},
		{"422", loaded, 422, "", false},
		{"500", def, 500, "", false},
		{"503", loaded, 503, "", false},
		{"single code matches", only303, 303, "/thanks", true},
		{"single code: 200 does not", only303, 200, "", false},
		{"single code: back to the form still fails", only303, 303, "/contact", false},
		{"custom not_location", thanks, 302, "/contact/retry", false},
		{"custom not_location: the form path is fine", thanks, 302, "/contact", true},
		{"custom status excludes 301", thanks, 301, "/thanks", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formSucceeded(tt.rule, "/contact", tt.status, []byte(tt.location)); got != tt.want {
				t.Fatalf("formSucceeded(%+v, %d, %q) = %v, want %v", tt.rule, tt.status, tt.location, got, tt.want)
			}
		})
	}
}

func TestBuildFormEvent(t *testing.T) {
	f := config.Form{Path: "/contact", Event: "lead_submitted"}
	fields := []formValue{
		{"email", "jane@example.com"}, {"phone", "+49 30 1234567"}, {"first_name", "Jane"}, {"last_name", "Doe"},
		{"city", "Berlin"}, {"state", "BE"}, {"zip", "10115"}, {"country", "DE"}, {"external_id", "c-1"},
		{"value", " 250.00 "}, {"currency", "EUR"}, {"transaction_id", "L-77"}, {"topic", "Kitchen"},
	}
	d := newCollectDecoded()
	e := buildFormEvent(d, f, fields, []byte("https://shop.example/contact?utm_source=x"), []byte("https://www.google.com/"), collectNow)
	if len(d.events) != 1 || d.events[0] != e || len(d.problems) != 0 {
		t.Fatalf("events %d, problems %+v", len(d.events), d.problems)
	}
	err := errors.Join(
		collectWant(e.Name, "lead_submitted"), collectWant(e.OriginalName, "lead_submitted"),
		collectWant(e.Source, enrich.SourceForm), collectWant(e.ReceivedAt, collectNow), collectWant(e.OccurredAt, collectNow),
		collectWant(e.URL, "https://shop.example/contact?utm_source=x"), collectWant(e.Path, "/contact"),
		collectWant(e.Host, "shop.example"), collectWant(e.Referrer, "https://www.google.com/"),
		collectWant(e.PII, enrich.PII{Email: "jane@example.com", Phone: "+49 30 1234567", FirstName: "Jane",
			LastName: "Doe", City: "Berlin", State: "BE", Zip: "10115", Country: "DE", ExternalID: "c-1"}),
		collectWant(e.Commerce.Value, enrich.Some(250)), collectWant(e.Commerce.Currency, "EUR"),
		collectWant(e.Commerce.TransactionID, "L-77"),
		collectWant(e.Properties, enrich.Props{{Key: "topic", Str: "Kitchen"}}),
	)
	if err != nil {
		t.Fatal(err)
	}
	out := e.AppendJSON(nil)
	if !json.Valid(out) || bytes.Contains(out, []byte("jane@example.com")) {
		t.Fatalf("encoding invalid or carrying raw PII: %s", out)
	}

	// A value that is not a number is a problem on the event.
	d = newCollectDecoded()
	buildFormEvent(d, f, []formValue{{"value", "a lot"}}, nil, nil, collectNow)
	if want := []enrich.FieldError{collectFE(0, "value", collectMsgNumber)}; !reflect.DeepEqual(d.problems, want) {
		t.Fatalf("problems %+v, want %+v", d.problems, want)
	}
}

// TestFormsEndToEndShape runs the three helpers the way the form route
// does: extract, check the origin's answer, build.
func TestFormsEndToEndShape(t *testing.T) {
	f := config.Form{Path: "/contact", Event: "lead_submitted", Fields: contactFields}
	ct, body := multipartBody(t, []byte("file"))
	vals, err := formFields(nil, []byte(ct), body, false, f.Fields)
	if err != nil {
		t.Fatal(err)
	}
	if !formSucceeded(f.Success, f.Path, 303, []byte("/contact/thanks")) {
		t.Fatal("303 to /contact/thanks is a success")
	}
	d := newCollectDecoded()
	e := buildFormEvent(d, f, vals, []byte("https://shop.example/contact"), nil, collectNow)
	if e.PII.Email != "jane@example.com" || e.PII.Phone != "+49 30 1234567" || e.PII.FirstName != "Jane" {
		t.Fatalf("PII %+v", e.PII)
	}
	d.release()
}
