package proxy

import (
	"encoding/json"
	"testing"

	"github.com/sidetrack/sidetrack/config"
)

func FuzzFormFields(f *testing.F) {
	ct, body := multipartBody(f, []byte("%PDF\x00"))
	f.Add(ct, body, false)
	f.Add(ct, body[:len(body)/2], true)
	f.Add("application/x-www-form-urlencoded", []byte("fname=Jane&your-email=a%40b.c&budget=12.5&subject=x"), false)
	f.Add("application/x-www-form-urlencoded; charset=utf-8", []byte("tel=%2B1%zz&budget=NaN&fname="), true)
	f.Add("multipart/form-data; boundary=b", []byte("--b\r\nContent-Disposition: form-data; name=\"tel\"\r\n\r\n1\r\n--b--\r\n"), false)
	f.Add("multipart/form-data; boundary=b", []byte("--b\r\nContent-Disposition: form-data; name=\"tel\"; filename=\"x\"\r\n\r\n"), true)
	form := config.Form{Path: "/contact", Event: "lead_submitted", Fields: contactFields}
	f.Fuzz(func(t *testing.T, ct string, body []byte, truncated bool) {
		vals, err := formFields(nil, []byte(ct), body, truncated, form.Fields)
		if err != nil {
			if len(vals) != 0 {
				t.Fatalf("error %v with values %q", err, vals)
			}
			return
		}
		seen := map[string]bool{}
		for _, v := range vals {
			if _, mapped := form.Fields[v.Field]; !mapped || v.Value == "" || len(v.Value) > formMaxValue || seen[v.Field] {
				t.Fatalf("bad value %q in %q", v, vals)
			}
			seen[v.Field] = true
		}
		d := newCollectDecoded()
		e := buildFormEvent(d, form, vals, nil, nil, collectNow)
		if out := e.AppendJSON(nil); !json.Valid(out) {
			t.Fatalf("invalid JSON: %s", out)
		}
		d.release()
	})
}
