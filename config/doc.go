// Package config owns sidetrack's configuration (DESIGN §6): the schema
// (Config and its sections), the embedded defaults (defaults.yaml), the
// human value types (Duration, Size, Rate, Fsync, and Secret, which never
// prints its value), loading a YAML file over the defaults with unknown keys
// rejected, SIDETRACK_* environment overrides, Validate reporting every
// problem at once with its key path, and Print of the effective config with
// secrets masked.
//
// Precedence, lowest first: embedded defaults, the config file, the
// environment, then per-destination defaults filling whatever is still
// unset (zero). Load does not validate, because the -dev/-demo flags change
// what is valid (Config.Dev); callers set Dev and then call Validate.
//
// config imports nothing of ours: every other package depends on it, so it
// must stay a leaf.
package config
