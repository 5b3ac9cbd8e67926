package enrich

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/sidetrack/sidetrack/config"
)

// maxSnakeName bounds the names the snake-case fallback looks at; longer
// names are never canonical and are not worth folding.
const maxSnakeName = 128

// Naming maps event names to canonical snake_case noun_verb names (DESIGN §4
// "Naming"): GA4's `purchase`, Segment's `Order Completed` and Meta's
// `Purchase` all become `order_completed`, so destinations, dedup and
// reports see one name per business event.
//
// The shipped table is enrich/data/event_aliases.tsv; config events.aliases
// (from → to) overrides and extends it. Unknown names are kept unchanged
// and flagged unknown_event. Naming is immutable after construction (apart
// from its counter) and safe for concurrent use.
type Naming struct {
	// canon maps every known name (canonical names to themselves, aliases
	// to their canonical name) to its canonical name.
	canon   map[string]string
	unknown atomic.Uint64
}

// NewNaming builds the name table from the shipped defaults and
// cfg.Events.Aliases (from → to). A config target is a canonical name: a new
// one, or a default one, or a default alias promoted to canonical (mapping
// order_completed → purchase renames every order to purchase). Targets that
// are themselves config aliases are followed. An empty name or an alias
// cycle is an error.
func NewNaming(cfg *config.Config) (*Naming, error) {
	n := &Naming{canon: make(map[string]string, 256)}
	err := readDataTSV("event_aliases.tsv", 1, 2, func(f []string) error {
		if len(f) == 1 {
			n.canon[f[0]] = f[0]
			return nil
		}
		n.canon[f[0]] = f[1]
		if _, ok := n.canon[f[1]]; !ok {
			n.canon[f[1]] = f[1]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		for from, to := range cfg.Events.Aliases {
			from, to = strings.TrimSpace(from), strings.TrimSpace(to)
			if from == "" || to == "" {
				return nil, fmt.Errorf("enrich: events.aliases: empty event name in %q -> %q", from, to)
			}
			n.canon[from] = to
		}
		// A target is a canonical name, even if the defaults call it an
		// alias: mapping order_completed -> purchase means "call it
		// purchase", so purchase must not lead back to order_completed.
		for _, to := range cfg.Events.Aliases {
			to = strings.TrimSpace(to)
			if !isConfigAlias(cfg.Events.Aliases, to) {
				n.canon[to] = to
			}
		}
	}
	// Resolve chains (a config alias to a default alias, or a default
	// canonical name redirected by config) so a lookup is one map access.
	for from, to := range n.canon {
		seen := 0
		for {
			next := n.canon[to]
			if next == to {
				break
			}
			to = next
			if seen++; seen > len(n.canon) {
				return nil, fmt.Errorf("enrich: events.aliases: alias cycle through %q", from)
			}
		}
		n.canon[from] = to
	}
	return n, nil
}

func isConfigAlias(aliases map[string]string, name string) bool {
	for from := range aliases {
		if strings.TrimSpace(from) == name {
			return true
		}
	}
	return false
}

// Canonical returns the canonical name of name and whether name is known
// (a canonical name or an alias). An unknown name is returned unchanged.
// Lookups are exact first, then in snake form (ASCII lower case, runs of
// spaces, '-' and '.' folded to one '_'), so "ORDER COMPLETED" and
// "Coupon Applied" are known too. It does not allocate.
func (n *Naming) Canonical(name string) (canon string, known bool) {
	if c, ok := n.canon[name]; ok {
		return c, true
	}
	if name == "" || len(name) > maxSnakeName {
		return name, false
	}
	var buf [maxSnakeName]byte
	s := appendSnake(buf[:0], name)
	if c, ok := n.canon[string(s)]; ok {
		return c, true
	}
	return name, false
}

// appendSnake appends the snake form of name to dst.
func appendSnake(dst []byte, name string) []byte {
	sep := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == ' ' || c == '-' || c == '.' || c == '_' || c == '\t':
			sep = true
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if sep && len(dst) > 0 {
			dst = append(dst, '_')
		}
		sep = false
		dst = append(dst, c)
	}
	return dst
}

// UnknownEvents returns how many events with an unknown name this stage has
// seen, for the metrics that watch tracking plans drift.
func (n *Naming) UnknownEvents() uint64 { return n.unknown.Load() }

// Apply renames e to its canonical name. OriginalName keeps the name as
// received (decoders may already have set it); a rename adds renamed_event,
// an unknown name is kept and adds unknown_event. Events without a name are
// left to validation.
func (n *Naming) Apply(_ *Request, e *Event, _ *EventResult) {
	if e.Name == "" {
		return
	}
	if e.OriginalName == "" {
		e.OriginalName = e.Name
	}
	canon, known := n.Canonical(e.Name)
	if !known {
		e.Quality.Add(FlagUnknownEvent)
		n.unknown.Add(1)
		return
	}
	if canon != e.Name {
		e.Name = canon
		e.Quality.Add(FlagRenamedEvent)
	}
}
