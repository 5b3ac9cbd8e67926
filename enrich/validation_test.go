package enrich

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/config"
)

func valNew(t testing.TB, dir string) *Validation {
	t.Helper()
	cfg := config.Default()
	cfg.Events.SchemasDir = dir
	v, err := NewValidation(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// valOrder is a valid order_completed event.
func valOrder() *Event {
	return &Event{
		Name: "order_completed", Source: SourceGA4,
		Commerce: Commerce{
			Value: Some(59.97), Currency: "USD", TransactionID: "T1",
			Items: []Item{
				{ID: "SKU-1", Name: "Blue T-Shirt", Price: Some(19.99), Quantity: Some(2)},
				{ID: "SKU-2", Name: "Canvas Tote", Price: Some(19.99), Quantity: Some(1)},
			},
		},
	}
}

func TestValidationRules(t *testing.T) {
	v := valNew(t, "")
	type fe = []FieldError
	tests := []struct {
		name   string
		mod    func(e *Event)
		errs   fe
		flags  []Flag
		curOut string
	}{
		{"valid order", func(e *Event) {}, nil, nil, "USD"},
		{"lowercase currency coerced", func(e *Event) { e.Commerce.Currency = "eur" }, nil, []Flag{FlagCoercedValue}, "EUR"},
		{"padded currency coerced", func(e *Event) { e.Commerce.Currency = " GBP " }, nil, []Flag{FlagCoercedValue}, "GBP"},
		{"unknown currency", func(e *Event) { e.Commerce.Currency = "ABC" }, fe{{0, "commerce.currency", msgISO4217}}, []Flag{FlagInvalidCurrency}, "ABC"},
		{"XXX rejected", func(e *Event) { e.Commerce.Currency = "XXX" }, fe{{0, "commerce.currency", msgISO4217}}, []Flag{FlagInvalidCurrency}, "XXX"},
		{"symbol rejected", func(e *Event) { e.Commerce.Currency = "$" }, fe{{0, "commerce.currency", msgISO4217}}, []Flag{FlagInvalidCurrency}, "$"},
		{"currency missing", func(e *Event) { e.Commerce.Currency = "" }, fe{{0, "commerce.currency", msgCurNeeded}}, nil, ""},
		{"zero value needs no currency", func(e *Event) { e.Commerce.Currency, e.Commerce.Value = "", Some(0) }, nil, nil, ""},
		{"negative value", func(e *Event) { e.Commerce.Value = Some(-1) }, fe{{0, "commerce.value", msgNonNegative}}, nil, "USD"},
		{"NaN value", func(e *Event) { e.Commerce.Value = Some(math.NaN()) }, fe{{0, "commerce.value", msgFinite}}, nil, "USD"},
		{"Inf value", func(e *Event) { e.Commerce.Value = Some(math.Inf(1)) }, fe{{0, "commerce.value", msgFinite}}, nil, "USD"},
		{"value missing on order", func(e *Event) { e.Commerce.Value = OptFloat{} }, fe{{0, "commerce.value", msgRequired}}, nil, "USD"},
		{"transaction id missing", func(e *Event) { e.Commerce.TransactionID = "" }, fe{{0, "commerce.transaction_id", msgRequired}}, nil, "USD"},
		{"item id missing", func(e *Event) { e.Commerce.Items[1].ID = "" }, fe{{0, "commerce.items[1].id", msgRequired}}, nil, "USD"},
		{"item quantity 0", func(e *Event) { e.Commerce.Items[0].Quantity = Some(0) }, fe{{0, "commerce.items[0].quantity", msgQuantity}}, nil, "USD"},
		{"item quantity NaN", func(e *Event) { e.Commerce.Items[0].Quantity = Some(math.NaN()) }, fe{{0, "commerce.items[0].quantity", msgQuantity}}, nil, "USD"},
		{"item quantity absent is 1", func(e *Event) { e.Commerce.Items[0].Quantity = OptFloat{} }, nil, nil, "USD"},
		{"every error reported", func(e *Event) {
			e.Commerce = Commerce{Value: Some(-5), Currency: "usdollar", Items: []Item{{Quantity: Some(-1)}}}
		}, fe{
			{0, "commerce.value", msgNonNegative}, {0, "commerce.currency", msgISO4217}, {0, "commerce.transaction_id", msgRequired},
			{0, "commerce.items[0].id", msgRequired}, {0, "commerce.items[0].quantity", msgQuantity},
		}, []Flag{FlagInvalidCurrency}, "usdollar"},
		{"order_paid needs transaction id", func(e *Event) { e.Name, e.Commerce.TransactionID = "order_paid", "" }, fe{{0, "commerce.transaction_id", msgRequired}}, nil, "USD"},
		{"order_refunded needs transaction id", func(e *Event) { e.Name, e.Commerce.TransactionID = "order_refunded", "" }, fe{{0, "commerce.transaction_id", msgRequired}}, nil, "USD"},
		{"order_paid needs no value", func(e *Event) { e.Name, e.Commerce.Value, e.Commerce.Currency = "order_paid", OptFloat{}, "" }, nil, nil, ""},
		{"product_added: commerce rules apply", func(e *Event) {
			e.Name, e.Commerce.TransactionID = "product_added", ""
			e.Commerce.Items[0].ID = ""
		}, fe{{0, "commerce.items[0].id", msgRequired}}, nil, "USD"},
		{"checkout_started without transaction id", func(e *Event) { e.Name, e.Commerce.TransactionID = "checkout_started", "" }, nil, nil, "USD"},
		{"lead_submitted needs nothing", func(e *Event) { e.Name, e.Commerce = "lead_submitted", Commerce{} }, nil, nil, ""},
		{"page_viewed without commerce", func(e *Event) { e.Name, e.Commerce = "page_viewed", Commerce{} }, nil, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := valOrder()
			tc.mod(e)
			e.Source = SourceCollect // strict: every error reported
			var res EventResult
			v.Apply(&Request{}, e, &res)
			if len(res.Errors) == 0 {
				res.Errors = nil
			}
			if !reflect.DeepEqual(res.Errors, tc.errs) {
				t.Errorf("errors\n got %+v\nwant %+v", res.Errors, tc.errs)
			}
			wantOutcome := Accepted
			if tc.errs != nil {
				wantOutcome = Invalid
			}
			if res.Outcome != wantOutcome {
				t.Errorf("outcome %v, want %v", res.Outcome, wantOutcome)
			}
			var want Flags
			for _, f := range tc.flags {
				want.Add(f)
			}
			if e.Quality != want {
				t.Errorf("flags %v, want %v", e.Quality, want)
			}
			if e.Commerce.Currency != tc.curOut {
				t.Errorf("currency %q, want %q", e.Commerce.Currency, tc.curOut)
			}
		})
	}
}

func TestValidationStrictVsQuarantine(t *testing.T) {
	v := valNew(t, "")
	tests := []struct {
		src     Source
		server  bool
		outcome Outcome
		reason  string
	}{
		{SourceCollect, false, Invalid, ""},
		{SourceBackend, true, Invalid, ""},
		{SourceSegment, true, Invalid, ""}, // server key on /v1: strict
		{SourceGA4, false, Quarantined, "invalid:commerce.items[].quantity"},
		{SourceSegment, false, Quarantined, "invalid:commerce.items[].quantity"},
		{SourceForm, false, Quarantined, "invalid:commerce.items[].quantity"},
	}
	for _, tc := range tests {
		e := valOrder()
		e.Source, e.Index = tc.src, 3
		e.Commerce.Items[1].Quantity = Some(-2)
		var res EventResult
		v.Apply(&Request{Server: tc.server}, e, &res)
		if res.Outcome != tc.outcome || res.Reason != tc.reason {
			t.Errorf("%s server=%v: outcome %v reason %q", tc.src, tc.server, res.Outcome, res.Reason)
		}
		if len(res.Errors) != 1 || res.Errors[0].Index != 3 || res.Errors[0].Field != "commerce.items[1].quantity" {
			t.Errorf("%s: errors %+v", tc.src, res.Errors)
		}
	}
	// Reasons are bounded and name no values.
	for field, want := range map[string]string{
		"commerce.value":              "invalid:commerce.value",
		"commerce.items[12].id":       "invalid:commerce.items[].id",
		"properties.tags[3][4]":       "invalid:properties.tags[][]",
		"commerce.items[0].x[1].y[2]": "invalid:commerce.items[].x[].y[]",
	} {
		if got := quarantineReason(field); got != want {
			t.Errorf("quarantineReason(%q) = %q", field, got)
		}
	}
}

func valWriteSchemas(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestValidationUserSchemas(t *testing.T) {
	dir := valWriteSchemas(t, map[string]string{
		"lead_submitted.json": `{
			"type": "object",
			"required": ["properties"],
			"properties": {
				"properties": {
					"type": "object",
					"required": ["form_id", "plan"],
					"properties": {
						"plan": {"enum": ["free", "pro"]},
						"form_id": {"type": "string", "pattern": "^F[0-9]+$"}
					}
				}
			}
		}`,
		"order_completed.json": `{"properties": {"commerce": {"properties": {"items": {"items": {"required": ["brand"]}}}}}}`,
		"README.md":            "not a schema",
	})
	v := valNew(t, dir)
	if got := v.Schemas(); !reflect.DeepEqual(got, []string{"lead_submitted", "order_completed"}) {
		t.Fatalf("schemas %v", got)
	}
	lead := func(props ...Prop) *Event {
		return &Event{Name: "lead_submitted", Source: SourceCollect, Properties: props}
	}
	tests := []struct {
		name string
		e    *Event
		errs []FieldError
	}{
		{"valid lead", lead(Prop{Key: "form_id", Str: "F12"}, Prop{Key: "plan", Str: "pro"}), nil},
		{"missing properties", lead(), []FieldError{{0, "properties", msgRequired}}},
		{"missing form_id", lead(Prop{Key: "plan", Str: "free"}), []FieldError{{0, "properties.form_id", msgRequired}}},
		{"bad values, not echoed", lead(Prop{Key: "form_id", Str: "jane@example.com"}, Prop{Key: "plan", Str: "secret-plan"}), []FieldError{
			{0, "properties.form_id", `does not satisfy the schema's "pattern"`},
			{0, "properties.plan", `does not satisfy the schema's "enum"`},
		}},
		{"type error", lead(Prop{Key: "form_id", Kind: PropNumber, Num: 12}, Prop{Key: "plan", Str: "pro"}), []FieldError{
			{0, "properties.form_id", "got number, want string"},
		}},
		{"other events untouched", &Event{Name: "page_viewed", Source: SourceCollect}, nil},
		{"nested array path", func() *Event { e := valOrder(); e.Source = SourceCollect; e.Commerce.Items[0].Brand = "Acme"; return e }(),
			[]FieldError{{0, "commerce.items[1].brand", msgRequired}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var res EventResult
			v.Apply(&Request{}, tc.e, &res)
			if len(res.Errors) == 0 {
				res.Errors = nil
			}
			// Schema errors come in no promised order.
			got := append([]FieldError(nil), res.Errors...)
			sortFieldErrors(got)
			want := append([]FieldError(nil), tc.errs...)
			sortFieldErrors(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors\n got %+v\nwant %+v", got, want)
			}
			for _, fe := range res.Errors {
				if strings.Contains(fe.Message, "jane") || strings.Contains(fe.Message, "secret-plan") {
					t.Errorf("message echoes the value: %q", fe.Message)
				}
			}
		})
	}
}

func sortFieldErrors(s []FieldError) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].Field+s[j].Message < s[j-1].Field+s[j-1].Message; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestValidationBadSchemas(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"not json", map[string]string{"lead_submitted.json": `{`}, "lead_submitted.json"},
		{"invalid schema", map[string]string{"order_completed.json": `{"type": 12}`}, "order_completed.json"},
		{"bad file name", map[string]string{"Order Completed.json": `{}`}, "canonical event name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Events.SchemasDir = valWriteSchemas(t, tc.files)
			_, err := NewValidation(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
	cfg := config.Default()
	cfg.Events.SchemasDir = filepath.Join(t.TempDir(), "missing")
	if _, err := NewValidation(cfg); err == nil {
		t.Error("missing schemas_dir accepted")
	}
}

// BenchmarkValidationValidOrder: the built-in rules on a valid order
// (target: 0 allocs).
func BenchmarkValidationValidOrder(b *testing.B) {
	v := valNew(b, "")
	e := valOrder()
	req := &Request{}
	var res EventResult
	b.ReportAllocs()
	done := benchCPU(b)
	for b.Loop() {
		res = EventResult{Errors: res.Errors[:0]}
		v.Apply(req, e, &res)
	}
	done()
	if res.Outcome != Accepted {
		b.Fatal(res)
	}
}

// BenchmarkValidationCoercedCurrency: a lower-case currency is upper-cased
// into the event's arena.
func BenchmarkValidationCoercedCurrency(b *testing.B) {
	v := valNew(b, "")
	var pool EventPool
	req := &Request{}
	var res EventResult
	b.ReportAllocs()
	for b.Loop() {
		e := pool.Get()
		e.Name, e.Commerce.Value, e.Commerce.Currency, e.Commerce.TransactionID = "order_completed", Some(10), "usd", "T1"
		res = EventResult{Errors: res.Errors[:0]}
		v.Apply(req, e, &res)
		pool.Put(e)
	}
}
