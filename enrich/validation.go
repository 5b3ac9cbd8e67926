package enrich

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/currency"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/sidetrack/sidetrack/config"
)

// Validation is the validation stage (DESIGN §4 "Validation"). Built-in
// rules are compiled Go, run on every event and allocate nothing for a
// valid one:
//
//   - commerce.value, when present, is a finite number ≥ 0; required on
//     order_completed.
//   - commerce.currency is an ISO 4217 code (not XXX or XTS), required when
//     value is set and not 0 (a zero amount needs no unit). Lower case or
//     padded codes are upper-cased and trimmed (flag coerced_value); an
//     unknown code flags invalid_currency.
//   - commerce.transaction_id is required on order_completed, order_paid
//     and order_refunded.
//   - commerce.items[i].id is required; quantity, when present, is > 0
//     (absent means 1, as in GA4 and Segment).
//   - lead_submitted needs nothing beyond its name.
//
// The commerce rules apply to any event that carries the data, so they do
// not depend on the list of canonical ecommerce names. User JSON Schemas
// (`<canonical_name>.json` in events.schemas_dir) run only for the events
// they name, against the event's JSON document.
//
// A failing event on a strict route (source collect or backend, or any
// server request) is Invalid with every field error; elsewhere it is
// Quarantined with reason "invalid:<first field>" (array indexes removed,
// so the reason stays a bounded, PII-free metric label).
type Validation struct {
	schemas map[string]*jsonschema.Schema
	bufs    sync.Pool // *[]byte for event JSON
	printer *message.Printer
}

// Canonical names the built-in rules know.
const (
	evOrderCompleted = "order_completed"
	evOrderPaid      = "order_paid"
	evOrderRefunded  = "order_refunded"
)

// Field paths and messages of the built-in rules.
const (
	fValue    = "commerce.value"
	fCurrency = "commerce.currency"
	fTxID     = "commerce.transaction_id"
	fItems    = "commerce.items"

	msgFinite      = "must be a finite number"
	msgNonNegative = "must be a number ≥ 0"
	msgRequired    = "is required"
	msgISO4217     = "must be an ISO 4217 currency code such as USD or EUR"
	msgCurNeeded   = "is required when value is set"
	msgQuantity    = "must be a number > 0"
)

// NewValidation builds the validation stage and compiles the user schemas
// in cfg.Events.SchemasDir. A schema that does not compile, or a file name
// that is not a canonical event name, is an error naming the file.
func NewValidation(cfg *config.Config) (*Validation, error) {
	v := &Validation{
		schemas: map[string]*jsonschema.Schema{},
		printer: message.NewPrinter(language.English),
	}
	v.bufs.New = func() any { b := make([]byte, 0, 2048); return &b }
	dir := cfg.Events.SchemasDir
	if dir == "" {
		return v, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("events.schemas_dir: %w", err)
	}
	c := jsonschema.NewCompiler()
	var errs []error
	for _, ent := range entries {
		name, ok := strings.CutSuffix(ent.Name(), ".json")
		if ent.IsDir() || !ok {
			continue
		}
		if !validEventName(name) {
			errs = append(errs, fmt.Errorf("events.schemas_dir: %s: file name must be a canonical event name (lower snake_case) + .json", ent.Name()))
			continue
		}
		path, err := filepath.Abs(filepath.Join(dir, ent.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("events.schemas_dir: %s: %w", ent.Name(), err))
			continue
		}
		sch, err := c.Compile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("events.schemas_dir: %s: %w", ent.Name(), err))
			continue
		}
		v.schemas[name] = sch
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return v, nil
}

func validEventName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Schemas returns the event names that have a user schema, sorted.
func (v *Validation) Schemas() []string {
	names := make([]string, 0, len(v.schemas))
	for n := range v.schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Apply implements Stage.
func (v *Validation) Apply(req *Request, e *Event, res *EventResult) {
	start := len(res.Errors)
	fail := func(field, msg string) {
		res.Errors = append(res.Errors, FieldError{Index: e.Index, Field: field, Message: msg})
	}
	v.commerce(e, fail)
	if sch := v.schemas[e.Name]; sch != nil {
		v.schema(sch, e, fail)
	}
	if len(res.Errors) == start {
		return
	}
	if req.Server || e.Source == SourceCollect || e.Source == SourceBackend {
		res.Outcome = Invalid
		return
	}
	res.Outcome = Quarantined
	res.Reason = quarantineReason(res.Errors[start].Field)
}

func (v *Validation) commerce(e *Event, fail func(field, msg string)) {
	c := &e.Commerce
	orderLike := e.Name == evOrderCompleted || e.Name == evOrderPaid || e.Name == evOrderRefunded
	if c.Value.Set {
		switch {
		case math.IsNaN(c.Value.V) || math.IsInf(c.Value.V, 0):
			fail(fValue, msgFinite)
		case c.Value.V < 0:
			fail(fValue, msgNonNegative)
		}
	} else if e.Name == evOrderCompleted {
		fail(fValue, msgRequired)
	}
	if c.Currency != "" {
		code, coerced, ok := normalizeCurrency(c.Currency)
		if !ok {
			e.Quality.Add(FlagInvalidCurrency)
			fail(fCurrency, msgISO4217)
		} else if coerced {
			c.Currency = e.Intern(code[:])
			e.Quality.Add(FlagCoercedValue)
		}
	} else if c.Value.Set && c.Value.V != 0 {
		fail(fCurrency, msgCurNeeded)
	}
	if orderLike && c.TransactionID == "" {
		fail(fTxID, msgRequired)
	}
	for i := range c.Items {
		it := &c.Items[i]
		if it.ID == "" {
			fail(itemField(i, "id"), msgRequired)
		}
		if q := it.Quantity; q.Set && !(q.V > 0 && !math.IsInf(q.V, 0)) {
			fail(itemField(i, "quantity"), msgQuantity)
		}
	}
}

func itemField(i int, name string) string {
	return fItems + "[" + strconv.Itoa(i) + "]." + name
}

// normalizeCurrency returns the upper-case ISO 4217 code of s, whether
// that changed s (case or surrounding space), and whether it is a real
// currency. XXX ("no currency") and XTS (testing) are not.
func normalizeCurrency(s string) (code [3]byte, coerced, ok bool) {
	t := strings.TrimSpace(s)
	if len(t) != 3 {
		return code, false, false
	}
	coerced = len(t) != len(s)
	for i := 0; i < 3; i++ {
		c := t[i]
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
			coerced = true
		case c >= 'A' && c <= 'Z':
		default:
			return code, false, false
		}
		code[i] = c
	}
	if string(code[:]) == "XXX" || string(code[:]) == "XTS" {
		return code, false, false
	}
	if _, err := currency.ParseISO(string(code[:])); err != nil {
		return code, false, false
	}
	return code, coerced, true
}

// quarantineReason turns a field path into a bounded reason:
// "commerce.items[3].id" → "invalid:commerce.items[].id".
func quarantineReason(field string) string {
	switch field {
	case fValue:
		return "invalid:" + fValue
	case fCurrency:
		return "invalid:" + fCurrency
	case fTxID:
		return "invalid:" + fTxID
	}
	var b strings.Builder
	b.WriteString("invalid:")
	for i := 0; i < len(field); i++ {
		c := field[i]
		b.WriteByte(c)
		if c == '[' {
			for i+1 < len(field) && field[i+1] >= '0' && field[i+1] <= '9' {
				i++
			}
		}
	}
	return b.String()
}

// schema validates e's JSON against a user schema. It runs only for the
// events a schema names, so its allocations stay off the common path.
func (v *Validation) schema(sch *jsonschema.Schema, e *Event, fail func(field, msg string)) {
	bp := v.bufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 256<<10 {
			v.bufs.Put(bp)
		}
	}()
	*bp = e.AppendJSON((*bp)[:0])
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(*bp))
	if err != nil {
		fail("event", "cannot be checked against its schema")
		return
	}
	err = sch.Validate(inst)
	var ve *jsonschema.ValidationError
	if err == nil {
		return
	}
	if !errors.As(err, &ve) {
		fail("event", "cannot be checked against its schema")
		return
	}
	n := 0
	v.leaves(ve, func(le *jsonschema.ValidationError) {
		if n >= 50 {
			return
		}
		n++
		field := schemaField(le.InstanceLocation)
		if r, ok := le.ErrorKind.(*kind.Required); ok && len(r.Missing) > 0 {
			for _, m := range r.Missing {
				fail(joinField(field, m), msgRequired)
			}
			return
		}
		fail(orEvent(field), v.schemaMessage(le.ErrorKind))
	})
}

// leaves calls f for every innermost error (the ones that say what is
// wrong, rather than "allOf failed").
func (v *Validation) leaves(ve *jsonschema.ValidationError, f func(*jsonschema.ValidationError)) {
	if len(ve.Causes) == 0 {
		f(ve)
		return
	}
	for _, c := range ve.Causes {
		v.leaves(c, f)
	}
}

// schemaMessage describes a schema failure without echoing the event's
// values: errors about patterns, formats, enums and constants would quote
// the offending value, which may be personal data, so for those only the
// keyword is named.
func (v *Validation) schemaMessage(k jsonschema.ErrorKind) string {
	switch k.(type) {
	case *kind.Pattern, *kind.Format, *kind.Enum, *kind.Const,
		*kind.ContentEncoding, *kind.ContentMediaType, *kind.PropertyNames:
		kw := k.KeywordPath()
		name := "schema"
		if len(kw) > 0 {
			name = kw[len(kw)-1]
		}
		return "does not satisfy the schema's " + strconv.Quote(name)
	}
	return k.LocalizedString(v.printer)
}

// schemaField turns a JSON pointer's tokens into a field path:
// ["commerce","items","0","id"] → "commerce.items[0].id".
func schemaField(loc []string) string {
	var b strings.Builder
	for _, t := range loc {
		if t != "" && strings.Trim(t, "0123456789") == "" && b.Len() > 0 {
			b.WriteString("[" + t + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(t)
	}
	return b.String()
}

func joinField(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "." + child
}

func orEvent(field string) string {
	if field == "" {
		return "event"
	}
	return field
}
