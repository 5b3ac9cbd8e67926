package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration that also accepts days ("400d", "1d12h") in
// YAML and env, because cookie lifetimes and retention are naturally
// written in days and "9600h" is unreadable.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ParseDuration parses a Go duration ("1h30m", "50ms") that may also use a
// "d" unit of 24 hours ("400d", "1d12h", "1.5d"). "0" is zero.
func ParseDuration(s string) (Duration, error) {
	orig := s
	fail := func(why string) (Duration, error) {
		return 0, fmt.Errorf("invalid duration %q: %s (e.g. 50ms, 30s, 5m, 2h, 400d)", orig, why)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return fail("empty")
	}
	neg := false
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return fail("no number")
	}
	// Split into number+unit terms so "d" terms can be scaled and the rest
	// handed to time.ParseDuration, which owns the other units.
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && (s[i] == '.' || ('0' <= s[i] && s[i] <= '9')) {
			i++
		}
		if i == 0 {
			return fail("expected a number")
		}
		j := i
		for j < len(s) && s[j] != '.' && (s[j] < '0' || s[j] > '9') {
			j++
		}
		num, unit := s[:i], s[i:j]
		s = s[j:]
		if unit == "" {
			return fail("missing unit")
		}
		var term time.Duration
		if unit == "d" {
			h, err := time.ParseDuration(num + "h")
			if err != nil {
				return fail("bad number")
			}
			if h > math.MaxInt64/24 {
				return fail("out of range")
			}
			term = h * 24
		} else {
			t, err := time.ParseDuration(num + unit)
			if err != nil {
				if strings.Contains(err.Error(), "unknown unit") {
					return fail("unknown unit " + strconv.Quote(unit))
				}
				return fail("bad number")
			}
			term = t
		}
		if total > math.MaxInt64-term {
			return fail("out of range")
		}
		total += term
	}
	if neg {
		total = -total
	}
	return Duration(total), nil
}

// String formats d the way it is written in config: whole days as "d",
// no trailing zero units ("400d", "1d12h", "30m", "50ms").
func (d Duration) String() string {
	v := time.Duration(d)
	if v == 0 {
		return "0s"
	}
	sign := ""
	if v < 0 {
		if v == math.MinInt64 {
			return v.String()
		}
		sign, v = "-", -v
	}
	const day = 24 * time.Hour
	days := v / day
	rest := v % day
	var b strings.Builder
	b.WriteString(sign)
	if days > 0 {
		b.WriteString(strconv.FormatInt(int64(days), 10))
		b.WriteByte('d')
	}
	if rest > 0 {
		r := rest.String()
		if strings.HasSuffix(r, "m0s") {
			r = r[:len(r)-2]
		}
		if strings.HasSuffix(r, "h0m") {
			r = r[:len(r)-2]
		}
		b.WriteString(r)
	}
	return b.String()
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, "duration", func(s string) error {
		v, err := ParseDuration(s)
		*d = v
		return err
	})
}

// UnmarshalText implements encoding.TextUnmarshaler (env overrides).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err == nil {
		*d = v
	}
	return err
}

// MarshalText implements encoding.TextMarshaler (JSON, YAML).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Size is a byte count that accepts human sizes: binary units ("512KiB",
// "4GiB"), decimal units ("16KB" = 16000, "1MB"), or plain bytes ("1024",
// "100B"). Decimal units follow SI because Segment's documented limits
// ("32 KB") are decimal.
type Size int64

// Bytes returns s as a byte count.
func (s Size) Bytes() int64 { return int64(s) }

// sizeUnits is ordered so String picks the largest exact unit, binary
// before decimal.
var sizeUnits = [...]struct {
	name string
	mult int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	{"B", 1},
}

// ParseSize parses a human size; unit names are case-insensitive and may
// follow the number after a space ("16 KiB"). Fractions are allowed when
// the result is a whole number of bytes ("1.5KiB").
func ParseSize(s string) (Size, error) {
	orig := s
	fail := func(why string) (Size, error) {
		return 0, fmt.Errorf("invalid size %q: %s (e.g. 1048576, 512KiB, 4GiB, 32KB)", orig, why)
	}
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] == '.' || ('0' <= s[i] && s[i] <= '9')) {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		if strings.HasPrefix(s, "-") {
			return fail("must not be negative")
		}
		return fail("expected a number")
	}
	mult := int64(-1)
	if unit == "" {
		mult = 1
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			mult = u.mult
		}
	}
	if mult < 0 {
		return fail("unknown unit " + strconv.Quote(unit))
	}
	if len(num) > 64 {
		return fail("number too long")
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok || strings.Count(num, ".") > 1 {
		return fail("bad number")
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return fail("not a whole number of bytes")
	}
	if !r.Num().IsInt64() {
		return fail("out of range")
	}
	return Size(r.Num().Int64()), nil
}

// String formats s with the largest unit that divides it exactly.
func (s Size) String() string {
	if s <= 0 {
		return strconv.FormatInt(int64(s), 10)
	}
	for _, u := range sizeUnits {
		if int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) // unreachable: B divides all
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, "size", func(v string) error {
		p, err := ParseSize(v)
		*s = p
		return err
	})
}

// UnmarshalText implements encoding.TextUnmarshaler (env overrides).
func (s *Size) UnmarshalText(b []byte) error {
	p, err := ParseSize(string(b))
	if err == nil {
		*s = p
	}
	return err
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalYAML implements yaml.Marshaler.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// Secret is a string that never prints: String, Format, YAML, JSON and text
// encodings all show "[redacted]" (an empty secret stays empty, so "not
// set" remains visible). Only Reveal returns the value.
type Secret string

// redacted is what every encoding of a non-empty Secret shows.
const redacted = "[redacted]"

// Reveal returns the secret's value; call it only where the value is used.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer with the masked form.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// Format implements fmt.Formatter so that every verb (%v, %+v, %#v, %s,
// %q, %x, …) prints the masked form, including inside structs and slices.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'q' || (verb == 'v' && f.Flag('#')):
		fmt.Fprint(f, strconv.Quote(s.String()))
	default:
		fmt.Fprint(f, s.String())
	}
}

// GoString implements fmt.GoStringer for callers that bypass Format.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// MarshalYAML implements yaml.Marshaler with the masked form.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON implements json.Marshaler with the masked form.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText implements encoding.TextMarshaler with the masked form.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalYAML takes any scalar verbatim, so numeric-looking tokens and
// ids ("0123") keep their exact text. Errors never quote the value.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a secret must be a single string", n.Line)}}
	}
	*s = Secret(n.Value)
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (env overrides).
func (s *Secret) UnmarshalText(b []byte) error {
	*s = Secret(b)
	return nil
}

// Rate is a number of events per time unit ("50/s", "600/m", "10/h", "1/d",
// "5/10s"). Zero ("0/s") means unlimited where a rate is a limit.
type Rate struct {
	PerSecond float64
}

// ParseRate parses "<number>/<unit>", where the unit is s, m, h, d or any
// duration ("10s").
func ParseRate(s string) (Rate, error) {
	orig := s
	fail := func(why string) (Rate, error) {
		return Rate{}, fmt.Errorf("invalid rate %q: %s (e.g. 50/s, 600/m, 10/h)", orig, why)
	}
	num, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return fail("missing /unit")
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return fail("bad number")
	}
	if n < 0 {
		return fail("must not be negative")
	}
	per = strings.TrimSpace(per)
	switch per {
	case "s", "m", "h", "d":
		per = "1" + per
	}
	d, err := ParseDuration(per)
	if err != nil || d <= 0 {
		return fail("bad unit " + strconv.Quote(per))
	}
	return Rate{PerSecond: n / d.D().Seconds()}, nil
}

// String formats r per second, minute or hour, whichever is whole.
func (r Rate) String() string {
	for _, u := range [...]struct {
		name string
		secs float64
	}{{"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}} {
		v := r.PerSecond * u.secs
		if rv := math.Round(v); rv != 0 && math.Abs(v-rv) <= 1e-9*math.Abs(v) {
			return strconv.FormatFloat(rv, 'f', -1, 64) + "/" + u.name
		}
	}
	return strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + "/s"
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, "rate", func(s string) error {
		v, err := ParseRate(s)
		*r = v
		return err
	})
}

// UnmarshalText implements encoding.TextUnmarshaler (env overrides).
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err == nil {
		*r = v
	}
	return err
}

// MarshalText implements encoding.TextMarshaler.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// MarshalYAML implements yaml.Marshaler.
func (r Rate) MarshalYAML() (any, error) { return r.String(), nil }

// Fsync is the spool's fsync policy: "always", "never", or an interval
// ("50ms"). Exactly one of the three is set in a valid value; the zero
// value is "not set" and fails Validate.
type Fsync struct {
	Always   bool
	Never    bool
	Interval time.Duration
}

// ParseFsync parses "always", "never" or a positive duration.
func ParseFsync(s string) (Fsync, error) {
	switch strings.TrimSpace(s) {
	case "always":
		return Fsync{Always: true}, nil
	case "never":
		return Fsync{Never: true}, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return Fsync{}, fmt.Errorf("invalid fsync %q: want always, never or an interval such as 50ms", s)
	}
	if d <= 0 {
		return Fsync{}, fmt.Errorf("invalid fsync %q: the interval must be positive (or use always/never)", s)
	}
	return Fsync{Interval: d.D()}, nil
}

// String formats f as it is written in config.
func (f Fsync) String() string {
	switch {
	case f.Always:
		return "always"
	case f.Never:
		return "never"
	}
	return Duration(f.Interval).String()
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (f *Fsync) UnmarshalYAML(n *yaml.Node) error {
	return unmarshalScalar(n, "fsync", func(s string) error {
		v, err := ParseFsync(s)
		*f = v
		return err
	})
}

// UnmarshalText implements encoding.TextUnmarshaler (env overrides).
func (f *Fsync) UnmarshalText(b []byte) error {
	v, err := ParseFsync(string(b))
	if err == nil {
		*f = v
	}
	return err
}

// MarshalText implements encoding.TextMarshaler.
func (f Fsync) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// MarshalYAML implements yaml.Marshaler.
func (f Fsync) MarshalYAML() (any, error) { return f.String(), nil }

// unmarshalScalar runs parse on a scalar node and turns failures into a
// yaml.TypeError carrying the line, so decoding goes on and every bad value
// of a file is reported together.
func unmarshalScalar(n *yaml.Node, what string, parse func(string) error) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a %s must be a single value", n.Line, what)}}
	}
	if err := parse(n.Value); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return te
		}
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	return nil
}
