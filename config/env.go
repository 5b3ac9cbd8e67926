package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Environment overrides (DESIGN §6). A variable is SIDETRACK_ + the YAML
// key path in upper case with "__" between levels:
//
//	SIDETRACK_ORIGIN=http://shop:3000
//	SIDETRACK_SPOOL__MAX_BYTES=8GiB           same parsers as YAML
//	SIDETRACK_HOSTS=a.com,b.com               lists: comma-separated
//	SIDETRACK_EVENTS__ALIASES__Purchase=x     maps: the key, case kept
//	SIDETRACK_DESTINATIONS__META__ACCESS_TOKEN=…   a destination by name
//	SIDETRACK_SCRIPTS__0__UPSTREAM=…          other lists of sections: by index
//	SIDETRACK_ADMIN__TOKEN_FILE=/run/secrets/admin  value read from a file
//
// Key segments match case-insensitively; destination names also match
// with '-' and '_' interchanged (env names cannot hold '-'). A _FILE value
// has its trailing newlines trimmed; for lists, newlines separate items
// too. Env cannot add destinations or other list entries, only change
// those the file (or the defaults) declare. A SIDETRACK_ variable that
// matches no key is an error, so a typo never passes silently.
const envPrefix = "SIDETRACK_"

// envReserved lists SIDETRACK_ variables that are not config keys: main
// reads them itself.
func envReserved(name string) bool {
	return name == "SIDETRACK_CONFIG"
}

// maxEnvFile caps a _FILE read: these are secrets and small values, and
// a mistaken path to a large file should fail, not load it.
const maxEnvFile = 1 << 20

// envSetter stores one env value; fromFile says the value came from a
// _FILE, where newlines also separate list items.
type envSetter func(val string, fromFile bool) error

// applyEnv applies every SIDETRACK_ variable in env to cfg, in name order,
// and reports all failures together.
func applyEnv(cfg *Config, env []string) error {
	vars := make(map[string]string)
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, envPrefix) || envReserved(k) {
			continue
		}
		vars[k] = v
	}
	root := reflect.ValueOf(cfg).Elem()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		if err := applyEnvVar(root, vars, name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return &envError{errs: errs}
	}
	return nil
}

// envError lists every bad override, one per line; Unwrap keeps
// errors.Is working (fs.ErrNotExist from a _FILE).
type envError struct{ errs []error }

func (e *envError) Error() string {
	var b strings.Builder
	b.WriteString("invalid SIDETRACK_* environment overrides:")
	for _, err := range e.errs {
		b.WriteString("\n  ")
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *envError) Unwrap() []error { return e.errs }

// applyEnvVar applies one variable. Errors name the variable, never its
// value (it may be a secret).
func applyEnvVar(root reflect.Value, vars map[string]string, name string) error {
	key := strings.TrimPrefix(name, envPrefix)
	// <KEY>_FILE first: no YAML key ends in _file, and a map entry such as
	// HEADERS__AUTHORIZATION_FILE means "the Authorization header, from a file".
	if base, ok := strings.CutSuffix(key, "_FILE"); ok {
		if set, path, err := resolveEnv(root, base); err == nil {
			if _, both := vars[envPrefix+base]; both {
				return fmt.Errorf("%s: set either %s or %s, not both", name, envPrefix+base, name)
			}
			val, err := readEnvFile(vars[name])
			if err != nil {
				return fmt.Errorf("%s (%s): %w", name, path, err)
			}
			if err := set(val, true); err != nil {
				return fmt.Errorf("%s (%s): %w", name, path, err)
			}
			return nil
		}
	}
	set, path, err := resolveEnv(root, key)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := set(vars[name], false); err != nil {
		return fmt.Errorf("%s (%s): %w", name, path, err)
	}
	return nil
}

// resolveEnv finds the config value an env key (without prefix) names and
// returns a setter for it and its YAML path. It changes nothing.
func resolveEnv(root reflect.Value, key string) (envSetter, string, error) {
	segs := strings.Split(key, "__")
	v, path := root, ""
	for i, seg := range segs {
		if seg == "" {
			return nil, "", errors.New(`empty key segment (levels are separated by exactly "__")`)
		}
		if isTextValue(v) {
			return nil, "", fmt.Errorf("%s is a single value, it has no key %q", path, strings.ToLower(seg))
		}
		switch v.Kind() {
		case reflect.Struct:
			f, name, ok := fieldByYAMLKey(v, seg)
			if !ok {
				return nil, "", fmt.Errorf("unknown config key %q in %s (keys: %s)",
					strings.ToLower(seg), sectionName(path), strings.Join(yamlKeys(v.Type()), ", "))
			}
			v, path = f, joinPath(path, name)
		case reflect.Slice:
			if v.Type().Elem().Kind() != reflect.Struct || isTextType(v.Type().Elem()) {
				return nil, "", fmt.Errorf("%s is a list of values; set it whole, comma-separated", path)
			}
			elem, label, err := sliceElem(v, seg, path)
			if err != nil {
				return nil, "", err
			}
			v, path = elem, label
		case reflect.Map:
			if i != len(segs)-1 {
				return nil, "", fmt.Errorf("%s.%s is a single value, it has no key %q", path, seg, strings.ToLower(segs[i+1]))
			}
			return mapSetter(v, seg), path + "." + seg, nil
		default:
			return nil, "", fmt.Errorf("%s is a single value, it has no key %q", path, strings.ToLower(seg))
		}
	}
	set, err := leafSetter(v, path)
	return set, path, err
}

// leafSetter returns the setter for a value an env variable names whole.
func leafSetter(v reflect.Value, path string) (envSetter, error) {
	hint := envName(path)
	switch {
	case isTextValue(v):
	case v.Kind() == reflect.Struct:
		return nil, fmt.Errorf("%s is a section; set one of its keys (%s__<KEY>)", sectionName(path), hint)
	case v.Kind() == reflect.Map:
		return nil, fmt.Errorf("%s is a map; set one entry (%s__<KEY>)", path, hint)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct && !isTextType(v.Type().Elem()):
		return nil, fmt.Errorf("%s is a list of sections; entries come from the config file, env can only change them (%s__<NAME or INDEX>__<KEY>)", path, hint)
	}
	return func(val string, fromFile bool) error { return parseEnvValue(v, val, fromFile) }, nil
}

// mapSetter sets one entry of a string-keyed map, creating the map if nil.
// The key keeps its case: env names may be mixed case, and CMP category
// ids such as OneTrust's "C0004" are upper case.
func mapSetter(m reflect.Value, key string) envSetter {
	return func(val string, fromFile bool) error {
		elem := reflect.New(m.Type().Elem()).Elem()
		if err := parseEnvValue(elem, val, fromFile); err != nil {
			return err
		}
		if m.IsNil() {
			m.Set(reflect.MakeMap(m.Type()))
		}
		m.SetMapIndex(reflect.ValueOf(key).Convert(m.Type().Key()), elem)
		return nil
	}
}

// sliceElem picks one element of a list of sections: by name when the
// element has a name key (destinations), else by index.
func sliceElem(v reflect.Value, seg, path string) (reflect.Value, string, error) {
	if _, _, named := fieldByYAMLKey(reflect.New(v.Type().Elem()).Elem(), "name"); named {
		want := envNormName(seg)
		for i := range v.Len() {
			e := v.Index(i)
			f, _, _ := fieldByYAMLKey(e, "name")
			if envNormName(f.String()) == want {
				return e, fmt.Sprintf("%s[%d] (%s)", path, i, f.String()), nil
			}
		}
		names := make([]string, v.Len())
		for i := range v.Len() {
			f, _, _ := fieldByYAMLKey(v.Index(i), "name")
			names[i] = f.String()
		}
		return reflect.Value{}, "", fmt.Errorf("no entry of %s is named %q (names: %s); env can change entries, not add them",
			path, strings.ToLower(seg), strings.Join(names, ", "))
	}
	i, err := strconv.Atoi(seg)
	if err != nil || i < 0 || i >= v.Len() {
		return reflect.Value{}, "", fmt.Errorf("%s has %d entries; %q is not an index of one (0-based); env can change entries, not add them", path, v.Len(), seg)
	}
	return v.Index(i), fmt.Sprintf("%s[%d]", path, i), nil
}

// envNormName folds what env names cannot express: case, and '-' vs '_'.
func envNormName(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "-", "_"))
}

// parseEnvValue parses s into v with the same parsers YAML uses.
func parseEnvValue(v reflect.Value, s string, fromFile bool) error {
	if isTextValue(v) {
		return v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true", "1", "yes", "on":
			v.SetBool(true)
		case "false", "0", "no", "off", "":
			v.SetBool(false)
		default:
			return fmt.Errorf("invalid boolean %q: want true or false", s)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		seps := ","
		if fromFile {
			seps = ",\r\n"
		}
		items := strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(seps, r) })
		out := reflect.MakeSlice(v.Type(), 0, len(items))
		for _, item := range items {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			e := reflect.New(v.Type().Elem()).Elem()
			if err := parseEnvValue(e, item, false); err != nil {
				return err
			}
			out = reflect.Append(out, e)
		}
		v.Set(out)
	default:
		return fmt.Errorf("cannot be set from the environment (%s)", v.Type())
	}
	return nil
}

// readEnvFile reads a _FILE value: trailing newlines trimmed (editors and
// `echo` add one), size capped.
func readEnvFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEnvFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxEnvFile {
		return "", fmt.Errorf("%s is larger than %s", path, Size(maxEnvFile))
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// isTextType reports whether *t parses itself from text (Duration, Size,
// Rate, Fsync, Secret): such values are leaves even when they are structs.
func isTextType(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

func isTextValue(v reflect.Value) bool { return v.CanAddr() && isTextType(v.Type()) }

// fieldByYAMLKey finds the field of struct v whose YAML key equals key
// (case-insensitively), looking inside ",inline" fields.
func fieldByYAMLKey(v reflect.Value, key string) (reflect.Value, string, bool) {
	t := v.Type()
	for i := range t.NumField() {
		name, inline, ok := yamlKey(t.Field(i))
		if !ok {
			continue
		}
		if inline {
			if f, n, found := fieldByYAMLKey(v.Field(i), key); found {
				return f, n, true
			}
			continue
		}
		if strings.EqualFold(name, key) {
			return v.Field(i), name, true
		}
	}
	return reflect.Value{}, "", false
}

// yamlKeys lists the YAML keys of struct type t, inline fields flattened.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		name, inline, ok := yamlKey(t.Field(i))
		switch {
		case !ok:
		case inline:
			keys = append(keys, yamlKeys(t.Field(i).Type)...)
		default:
			keys = append(keys, name)
		}
	}
	return keys
}

// yamlKey reads a field's YAML key the way yaml.v3 does.
func yamlKey(f reflect.StructField) (name string, inline, ok bool) {
	if !f.IsExported() {
		return "", false, false
	}
	tag := f.Tag.Get("yaml")
	if tag == "-" {
		return "", false, false
	}
	name, opts, _ := strings.Cut(tag, ",")
	for opt := range strings.SplitSeq(opts, ",") {
		if opt == "inline" {
			return "", true, true
		}
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false, true
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func sectionName(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

// envName turns a YAML path back into its variable name for hints; a list
// entry's label becomes <NAME or INDEX>.
func envName(path string) string {
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(envPrefix, "_"))
	for i, seg := range strings.Split(path, ".") {
		if i == 0 {
			b.WriteString("_")
		} else {
			b.WriteString("__")
		}
		entry := false
		if j := strings.IndexByte(seg, '['); j >= 0 {
			seg, entry = seg[:j], true
		}
		b.WriteString(strings.ToUpper(seg))
		if entry {
			b.WriteString("__<NAME or INDEX>")
		}
	}
	return b.String()
}
