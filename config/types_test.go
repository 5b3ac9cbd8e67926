package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"0s", 0},
		{"50ms", 50 * time.Millisecond},
		{"30m", 30 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"400d", 400 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"1.5d", 36 * time.Hour},
		{"2d3h4m5s", 2*24*time.Hour + 3*time.Hour + 4*time.Minute + 5*time.Second},
		{" 7d ", 7 * 24 * time.Hour},
		{"-1d", -24 * time.Hour},
		{"1µs", time.Microsecond},
		{"100000d", 100000 * 24 * time.Hour},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil || got.D() != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got.D(), err, tt.want)
		}
	}
	bad := []string{"", "d", "30", "1x", "1dd", "1d-2h", "--1d", "1.2.3h", "abc", "1 d", "999999999d", "9223372036854775807ns1s"}
	for _, in := range bad {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v; want an error", in, got)
		} else if !strings.Contains(err.Error(), "invalid duration") {
			t.Errorf("ParseDuration(%q) error %q lacks context", in, err)
		}
	}
}

func TestDurationString(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{50 * time.Millisecond, "50ms"},
		{90 * time.Second, "1m30s"},
		{30 * time.Minute, "30m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{10 * time.Second, "10s"},
		{400 * 24 * time.Hour, "400d"},
		{36 * time.Hour, "1d12h"},
		{24*time.Hour + time.Second, "1d1s"},
		{-36 * time.Hour, "-1d12h"},
	}
	for _, tt := range tests {
		if got := Duration(tt.in).String(); got != tt.want {
			t.Errorf("Duration(%v).String() = %q; want %q", tt.in, got, tt.want)
		}
		back, err := ParseDuration(Duration(tt.in).String())
		if err != nil || back.D() != tt.in {
			t.Errorf("round trip of %v: %v, %v", tt.in, back.D(), err)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1024", 1024},
		{"100B", 100},
		{"512KiB", 512 << 10},
		{"4GiB", 4 << 30},
		{"1MiB", 1 << 20},
		{"2TiB", 2 << 40},
		{"16KB", 16000},
		{"1MB", 1000000},
		{"32KB", 32000},
		{"500KB", 500000},
		{"1GB", 1e9},
		{"1TB", 1e12},
		{"16 KiB", 16 << 10},
		{"16kib", 16 << 10},
		{"1.5KiB", 1536},
		{"0.5MB", 500000},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got.Bytes() != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	bad := []string{"", "KiB", "-1", "-1KiB", "1.5B", "0.1KB1", "1XB", "1e3", "8EiB", "1..5KiB",
		"9223372036854775808", "8388608TiB", "1 K iB", strings.Repeat("9", 100)}
	for _, in := range bad {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d; want an error", in, got)
		} else if !strings.Contains(err.Error(), "invalid size") {
			t.Errorf("ParseSize(%q) error %q lacks context", in, err)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0"},
		{100, "100B"},
		{1024, "1KiB"},
		{16 << 10, "16KiB"},
		{4 << 30, "4GiB"},
		{32000, "32KB"},
		{500000, "500KB"},
		{1536, "1536B"}, // 1.5KiB: not whole in any unit but bytes
		{1 << 40, "1TiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q; want %q", int64(tt.in), got, tt.want)
		}
		if back, err := ParseSize(tt.in.String()); err != nil || back != tt.in {
			t.Errorf("round trip of %d: %d, %v", int64(tt.in), back, err)
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in     string
		want   float64
		string string
	}{
		{"50/s", 50, "50/s"},
		{"600/m", 10, "10/s"},
		{"10/h", 10.0 / 3600, "10/h"},
		{"1/d", 1.0 / 86400, "1/d"},
		{"90/m", 1.5, "90/m"},
		{"5/10s", 0.5, "30/m"},
		{"0/s", 0, "0/s"},
		{" 2.5 / s ", 2.5, "150/m"},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if err != nil || math.Abs(got.PerSecond-tt.want) > 1e-12 {
			t.Errorf("ParseRate(%q) = %v, %v; want %v/s", tt.in, got.PerSecond, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.string {
			t.Errorf("ParseRate(%q).String() = %q; want %q", tt.in, s, tt.string)
		}
	}
	bad := []string{"", "50", "50/", "/s", "50/x", "-1/s", "abc/s", "NaN/s", "Inf/s", "1e400/s", "1/0s", "1/-1s"}
	for _, in := range bad {
		if got, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %v; want an error", in, got)
		}
	}
}

func TestParseFsync(t *testing.T) {
	tests := []struct {
		in   string
		want Fsync
	}{
		{"always", Fsync{Always: true}},
		{"never", Fsync{Never: true}},
		{"50ms", Fsync{Interval: 50 * time.Millisecond}},
		{"1s", Fsync{Interval: time.Second}},
	}
	for _, tt := range tests {
		got, err := ParseFsync(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseFsync(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if got.String() != tt.in {
			t.Errorf("ParseFsync(%q).String() = %q", tt.in, got.String())
		}
	}
	for _, in := range []string{"", "sometimes", "0", "0s", "-1s", "Always"} {
		if got, err := ParseFsync(in); err == nil {
			t.Errorf("ParseFsync(%q) = %+v; want an error", in, got)
		}
	}
}

// TestTypesYAML decodes every type from YAML, checks that bad values are
// all reported with their lines, and that marshalling gives the human form.
func TestTypesYAML(t *testing.T) {
	type doc struct {
		D Duration `yaml:"d"`
		S Size     `yaml:"s"`
		R Rate     `yaml:"r"`
		F Fsync    `yaml:"f"`
		K Secret   `yaml:"k"`
	}
	var got doc
	if err := yaml.Unmarshal([]byte("d: 400d\ns: 16KiB\nr: 600/m\nf: never\nk: 0123\n"), &got); err != nil {
		t.Fatal(err)
	}
	want := doc{Duration(400 * 24 * time.Hour), 16 << 10, Rate{10}, Fsync{Never: true}, "0123"}
	if got != want {
		t.Fatalf("decoded %+v; want %+v", got, want)
	}
	out, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); s != "d: 400d\ns: 16KiB\nr: 10/s\nf: never\nk: '[redacted]'\n" {
		t.Errorf("marshalled:\n%s", s)
	}

	err = yaml.Unmarshal([]byte("d: 3\ns: lots\nr: fast\nf: [1]\nk: {a: b}\n"), &got)
	if err == nil {
		t.Fatal("bad values decoded without error")
	}
	for _, w := range []string{"line 1: invalid duration", "line 2: invalid size", "line 3: invalid rate", "line 4: a fsync must be a single value", "line 5: a secret must be a single string"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	const value = "hunter2-super-secret"
	s := Secret(value)
	type holder struct {
		S  Secret
		L  []Secret
		M  map[string]Secret
		P  *Secret
		In struct{ S Secret }
	}
	h := holder{S: s, L: []Secret{s}, M: map[string]Secret{"k": s}, P: &s}
	h.In.S = s
	outs := []string{
		s.String(), s.GoString(),
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %X %10s %-3v", s, s, s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", h, h, h),
		fmt.Sprintf("%v %+v %#v", &h, &h, &h),
		fmt.Sprintln(s, []Secret{s}),
	}
	for _, m := range []func() ([]byte, error){
		func() ([]byte, error) { return json.Marshal(h) },
		func() ([]byte, error) { return yaml.Marshal(h) },
		func() ([]byte, error) { return s.MarshalText() },
	} {
		b, err := m()
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(b))
	}
	for _, o := range outs {
		if strings.Contains(o, value) || strings.Contains(o, "hunter2") {
			t.Errorf("secret leaked: %s", o)
		}
		if !strings.Contains(o, "[redacted]") {
			t.Errorf("no redaction marker in %q", o)
		}
	}
	if s.Reveal() != value {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
	var empty Secret
	if got := fmt.Sprintf("%v|%s|%q", empty, empty, empty); got != `||""` {
		t.Errorf("empty secret prints %q; want it visibly empty", got)
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"0", "400d", "1d12h", "50ms", "1.5d", "-3h", "1µs", "99999999999d", "1d1d", ".5d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("%q → %v → %q → %v, %v", s, int64(d), d.String(), int64(back), err)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "512KiB", "4GiB", "16KB", "1.5KiB", "7 TB", "9223372036854775807", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("%q → negative %d", s, n)
		}
		back, err := ParseSize(n.String())
		if err != nil || back != n {
			t.Fatalf("%q → %d → %q → %d, %v", s, n, n.String(), back, err)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"50/s", "600/m", "10/h", "5/10s", "0/s", "1e-300/d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r.PerSecond < 0 || math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0) {
			t.Fatalf("%q → %v", s, r.PerSecond)
		}
		back, err := ParseRate(r.String())
		if err != nil || math.Abs(back.PerSecond-r.PerSecond) > 1e-9*r.PerSecond {
			t.Fatalf("%q → %v → %q → %v, %v", s, r.PerSecond, r.String(), back.PerSecond, err)
		}
	})
}
