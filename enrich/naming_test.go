package enrich

import (
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/config"
)

func newTestNaming(t testing.TB, aliases map[string]string) *Naming {
	t.Helper()
	n, err := NewNaming(&config.Config{Events: config.Events{Aliases: aliases}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNamingCanonical(t *testing.T) {
	n := newTestNaming(t, nil)
	tests := []struct {
		in, want string
		known    bool
	}{
		// DESIGN §4, exactly.
		{"purchase", "order_completed", true},
		{"Purchase", "order_completed", true},
		{"Order Completed", "order_completed", true},
		{"checkout_success", "order_completed", true},
		{"order_completed", "order_completed", true},
		{"page_view", "page_viewed", true},
		{"Page Viewed", "page_viewed", true},
		{"page", "page_viewed", true},
		{"add_to_cart", "product_added", true},
		{"Product Added", "product_added", true},
		{"begin_checkout", "checkout_started", true},
		{"Checkout Started", "checkout_started", true},
		{"generate_lead", "lead_submitted", true},
		{"Lead", "lead_submitted", true},
		{"lead_submitted", "lead_submitted", true},
		// Backend order events stay distinct.
		{"order_paid", "order_paid", true},
		{"order_refunded", "order_refunded", true},
		{"refund", "order_refunded", true},
		{"Order Refunded", "order_refunded", true},
		// GA4 recommended events and Segment spec v2.
		{"view_item", "product_viewed", true},
		{"Product Viewed", "product_viewed", true},
		{"view_item_list", "product_list_viewed", true},
		{"Product List Viewed", "product_list_viewed", true},
		{"remove_from_cart", "product_removed", true},
		{"Product Removed", "product_removed", true},
		{"add_to_wishlist", "product_wishlisted", true},
		{"Product Added to Wishlist", "product_wishlisted", true},
		{"add_payment_info", "payment_info_entered", true},
		{"Payment Info Entered", "payment_info_entered", true},
		{"add_shipping_info", "shipping_info_entered", true},
		{"sign_up", "signed_up", true},
		{"Signed Up", "signed_up", true},
		{"login", "signed_in", true},
		{"Signed In", "signed_in", true},
		{"search", "products_searched", true},
		{"Products Searched", "products_searched", true},
		{"view_cart", "cart_viewed", true},
		{"Cart Viewed", "cart_viewed", true},
		{"select_item", "product_clicked", true},
		{"Product Clicked", "product_clicked", true},
		{"select_promotion", "promotion_clicked", true},
		{"Promotion Clicked", "promotion_clicked", true},
		{"view_promotion", "promotion_viewed", true},
		{"Promotion Viewed", "promotion_viewed", true},
		{"share", "content_shared", true},
		{"screen", "screen_viewed", true},
		{"screen_view", "screen_viewed", true},
		{"identify", "user_identified", true},
		{"group", "group_identified", true},
		{"alias", "user_aliased", true},
		{"scroll", "page_scrolled", true},
		{"user_engagement", "user_engaged", true},
		{"session_start", "session_started", true},
		{"first_visit", "first_visit_started", true},
		// Meta standard events.
		{"AddToCart", "product_added", true},
		{"InitiateCheckout", "checkout_started", true},
		{"ViewContent", "product_viewed", true},
		{"CompleteRegistration", "signed_up", true},
		// Snake-form fallback.
		{"ORDER COMPLETED", "order_completed", true},
		{"order-completed", "order_completed", true},
		{"Coupon Applied", "coupon_applied", true},
		{"  Product   Added ", "product_added", true},
		{"Checkout Step Completed", "checkout_step_completed", true},
		// Unknown names come back unchanged.
		{"my_custom_event", "my_custom_event", false},
		{"Custom Thing Happened", "Custom Thing Happened", false},
		{"", "", false},
		{strings.Repeat("x", 300), strings.Repeat("x", 300), false},
	}
	for _, tc := range tests {
		got, known := n.Canonical(tc.in)
		if got != tc.want || known != tc.known {
			t.Errorf("Canonical(%q) = %q, %v; want %q, %v", tc.in, got, known, tc.want, tc.known)
		}
	}
}

func TestNamingConfigAliases(t *testing.T) {
	n := newTestNaming(t, map[string]string{
		"quote_requested": "lead_submitted", // extends to a default canonical name
		"Demo Booked":     "demo_booked",    // a new canonical name
		"checkout_done":   "purchase",       // chain through config only ...
		"purchase":        "sale_completed", // ... and redirect a default alias
		"step_a":          "step_b",
		"step_b":          "step_c",
	})
	for in, want := range map[string]string{
		"quote_requested": "lead_submitted",
		"Demo Booked":     "demo_booked",
		"demo_booked":     "demo_booked",
		"purchase":        "sale_completed",
		"checkout_done":   "sale_completed",
		"sale_completed":  "sale_completed",
		"Order Completed": "order_completed", // other defaults keep theirs
		"step_a":          "step_c",
		"step_b":          "step_c",
	} {
		if got, known := n.Canonical(in); got != want || !known {
			t.Errorf("Canonical(%q) = %q, %v; want %q, true", in, got, known, want)
		}
	}

	// Renaming a canonical name to a default alias promotes the alias.
	n = newTestNaming(t, map[string]string{"order_completed": "purchase"})
	for _, in := range []string{"purchase", "Purchase", "Order Completed", "order_completed"} {
		if got, _ := n.Canonical(in); got != "purchase" {
			t.Errorf("with order_completed->purchase: Canonical(%q) = %q, want purchase", in, got)
		}
	}
	if got, _ := n.Canonical("order_paid"); got != "order_paid" {
		t.Errorf("order_paid = %q", got)
	}
}

func TestNamingConfigErrors(t *testing.T) {
	for name, aliases := range map[string]map[string]string{
		"cycle":      {"a_x": "b_x", "b_x": "a_x"},
		"empty to":   {"a_x": " "},
		"empty from": {"": "a_x"},
	} {
		if _, err := NewNaming(&config.Config{Events: config.Events{Aliases: aliases}}); err == nil {
			t.Errorf("%s: NewNaming accepted %v", name, aliases)
		}
	}
}

func TestNamingApply(t *testing.T) {
	n := newTestNaming(t, nil)
	tests := []struct {
		name, original     string
		wantName, wantOrig string
		wantFlag           Flag
	}{
		{"purchase", "", "order_completed", "purchase", FlagRenamedEvent},
		{"Order Completed", "Order Completed", "order_completed", "Order Completed", FlagRenamedEvent},
		{"page_viewed", "", "page_viewed", "page_viewed", 0},
		{"my_event", "", "my_event", "my_event", FlagUnknownEvent},
		{"page_view", "pv_from_decoder", "page_viewed", "pv_from_decoder", FlagRenamedEvent},
	}
	for _, tc := range tests {
		e := &Event{Name: tc.name, OriginalName: tc.original}
		var res EventResult
		n.Apply(&Request{}, e, &res)
		if e.Name != tc.wantName || e.OriginalName != tc.wantOrig {
			t.Errorf("%q: name %q original %q, want %q %q", tc.name, e.Name, e.OriginalName, tc.wantName, tc.wantOrig)
		}
		for _, f := range []Flag{FlagRenamedEvent, FlagUnknownEvent} {
			if e.Quality.Has(f) != (f == tc.wantFlag) {
				t.Errorf("%q: flag %s = %v", tc.name, f, e.Quality.Has(f))
			}
		}
		if res.Outcome != Accepted {
			t.Errorf("%q: outcome %v", tc.name, res.Outcome)
		}
	}
	if got := n.UnknownEvents(); got != 1 {
		t.Errorf("UnknownEvents = %d, want 1", got)
	}
	e := &Event{}
	n.Apply(&Request{}, e, &EventResult{})
	if e.Quality != 0 || e.Name != "" {
		t.Errorf("empty name: %+v", e)
	}
}

func TestNamingNoAlloc(t *testing.T) {
	n := newTestNaming(t, nil)
	for _, name := range []string{"purchase", "Order Completed", "ORDER COMPLETED", "unknown_thing", "page_viewed"} {
		e := &Event{}
		allocs := testing.AllocsPerRun(100, func() {
			e.Name, e.OriginalName, e.Quality = name, "", 0
			n.Apply(&Request{}, e, &EventResult{})
		})
		if allocs != 0 {
			t.Errorf("Apply(%q): %v allocs, want 0", name, allocs)
		}
	}
}

// TestEventAliasesData keeps the shipped table honest: every target is
// snake_case and itself canonical, and no alias leads to order_completed
// from the backend's distinct order events.
func TestEventAliasesData(t *testing.T) {
	n := newTestNaming(t, nil)
	for from, to := range n.canon {
		if c := n.canon[to]; c != to {
			t.Errorf("%q -> %q is not canonical (-> %q)", from, to, c)
		}
		for i := 0; i < len(to); i++ {
			if c := to[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				t.Errorf("canonical name %q is not snake_case", to)
				break
			}
		}
	}
	for _, distinct := range []string{"order_paid", "order_refunded", "order_cancelled", "order_updated"} {
		if n.canon[distinct] != distinct {
			t.Errorf("%s is aliased to %s", distinct, n.canon[distinct])
		}
	}
}

func BenchmarkNaming(b *testing.B) {
	n := newTestNaming(b, nil)
	e := &Event{}
	req, res := &Request{}, &EventResult{}
	b.ReportAllocs()
	for b.Loop() {
		for _, name := range [...]string{"page_view", "purchase", "Order Completed", "page_viewed", "custom_event"} {
			e.Name, e.OriginalName, e.Quality = name, "", 0
			n.Apply(req, e, res)
		}
	}
}
