package proxy

import (
	"strings"
	"testing"
)

func FuzzCollectJSON(f *testing.F) {
	f.Add(readCollectFixture(f, "order.json"))
	// Small seeds: the fuzzer minimizes every new input, which takes long
	// for multi-KB ones (batch10.json is covered by TestCollectBatch).
	f.Add([]byte(`{"batch":[{"name":"a","items":[{"id":"x","quantity":1}]},{"name":"b","consent":{"ads":"denied"}}]}`))
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `{"batch":[]}`, `{"batch":[1,"a",null,{}]}`,
		`{"name":"x","value":"12.50","items":[{"id":1,"price":"1e3"}]}`,
		`{"name":"\u00e9\ud800","title":"\"\\","properties":{"a":{"b":[1]}}}`,
		`{"name":"x","timestamp":"2099-01-01T00:00:00+14:00","value":NaN,"tax":-Inf}`,
		`{"user":{"email":"0"}}`,
		`{"name":"x","consent":{"ads":"granted","ads":"denied","x":1},"user":{"email":"a@b"}}`,
		`{"name":"x","url":"https://u:p@h:1/p?q#f","` + strings.Repeat("z", 200) + `":0}`,
	} {
		f.Add([]byte(s))
	}
	c := newCollectDecoder(50)
	f.Fuzz(func(t *testing.T, body []byte) {
		d := newCollectDecoded()
		err := c.decodeJSON(d, body, collectNow)
		checkCollectDecoded(t, d, err)
		d.release()
	})
}

func FuzzCollectQuery(f *testing.F) {
	for _, s := range []string{
		"", "name=x", "name=page_viewed&url=https%3A%2F%2Fshop.example%2F&value=1.5&p.a=b&pn.n=2",
		"name=x&consent.analytics=granted&consent.ads=nope&up.t=g&upn.o=x",
		"name=x&timestamp=2025-03-14T09:00:00+01:00&items=1&user.email=a",
		"%zz=%&&&=&name", "name=%00%ff&p.%e9=%80",
	} {
		f.Add([]byte(s))
	}
	c := newCollectDecoder(0)
	f.Fuzz(func(t *testing.T, q []byte) {
		d := newCollectDecoded()
		err := c.decodeQuery(d, q, collectNow)
		if err != nil {
			t.Fatal(err)
		}
		checkCollectDecoded(t, d, err)
		d.release()
	})
}
