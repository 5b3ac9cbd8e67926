package enrich

import (
	"fmt"
	"time"

	"github.com/valyala/fastjson"
)

// DecodeJSON reads the NDJSON shape that AppendJSON writes into e (reset
// first), interning every string into e's arena. It is the read side of
// the spool: delivery decodes every stored event once per destination
// batch, so it avoids encoding/json's reflection. p is a reusable parser
// (not safe for concurrent use); unknown keys are ignored so that older
// binaries read newer spools.
func (e *Event) DecodeJSON(p *fastjson.Parser, b []byte) error {
	v, err := p.ParseBytes(b)
	if err != nil {
		return err
	}
	o, err := v.Object()
	if err != nil {
		return fmt.Errorf("event: %w", err)
	}
	e.Reset()
	d := eventDecoder{e: e}
	o.Visit(d.top)
	return d.err
}

// eventDecoder carries the first error of a Visit walk.
type eventDecoder struct {
	e   *Event
	err error
}

func (d *eventDecoder) fail(field string, err error) {
	if d.err == nil && err != nil {
		d.err = fmt.Errorf("event.%s: %w", field, err)
	}
}

func (d *eventDecoder) str(v *fastjson.Value) string {
	return d.e.Intern(v.GetStringBytes())
}

func (d *eventDecoder) time(field string, v *fastjson.Value) time.Time {
	t, err := time.Parse(time.RFC3339Nano, string(v.GetStringBytes()))
	d.fail(field, err)
	return t
}

func (d *eventDecoder) opt(v *fastjson.Value) OptFloat {
	if v.Type() != fastjson.TypeNumber {
		return OptFloat{}
	}
	return Some(v.GetFloat64())
}

func (d *eventDecoder) top(k []byte, v *fastjson.Value) {
	e := d.e
	switch string(k) {
	case "event_id":
		e.EventID = d.str(v)
	case "device_id":
		e.DeviceID = d.str(v)
	case "anonymous_id":
		e.AnonymousID = d.str(v)
	case "user_id":
		e.UserID = d.str(v)
	case "session_id":
		e.SessionID = d.str(v)
	case "ga_session_id":
		e.GASessionID = d.str(v)
	case "ga_session_number":
		e.GASessionNumber = v.GetInt64()
	case "ga_measurement_id":
		e.GAMeasurementID = d.str(v)
	case "page_load_id":
		e.PageLoadID = d.str(v)
	case "hit_seq":
		e.HitSeq = v.GetInt64()
	case "name":
		e.Name = d.str(v)
	case "original_name":
		e.OriginalName = d.str(v)
	case "source":
		e.Source = Source(d.str(v))
	case "received_at":
		e.ReceivedAt = d.time("received_at", v)
	case "occurred_at":
		e.OccurredAt = d.time("occurred_at", v)
	case "url":
		e.URL = d.str(v)
	case "path":
		e.Path = d.str(v)
	case "referrer":
		e.Referrer = d.str(v)
	case "title":
		e.Title = d.str(v)
	case "host":
		e.Host = d.str(v)
	case "attribution":
		d.object(v, d.attribution)
	case "context":
		d.object(v, d.context)
	case "consent":
		d.object(v, d.consent)
	case "user_data":
		d.object(v, d.userData)
	case "commerce":
		d.object(v, d.commerce)
	case "ga":
		d.object(v, d.ga)
	case "properties":
		e.Properties = d.props(v, e.Properties)
	case "user_properties":
		e.UserProperties = d.props(v, e.UserProperties)
	case "quality":
		for _, x := range v.GetArray() {
			name := x.GetStringBytes()
			for i, fn := range flagNames {
				if fn == string(name) {
					e.Quality.Add(Flag(1 << i))
				}
			}
		}
	case "destinations":
		for _, x := range v.GetArray() {
			e.Destinations = append(e.Destinations, d.str(x))
		}
	}
}

func (d *eventDecoder) object(v *fastjson.Value, f func(k []byte, v *fastjson.Value)) {
	if o := v.GetObject(); o != nil {
		o.Visit(f)
	}
}

func (d *eventDecoder) attribution(k []byte, v *fastjson.Value) {
	a := &d.e.Attribution
	switch string(k) {
	case "utm_source":
		a.UTMSource = d.str(v)
	case "utm_medium":
		a.UTMMedium = d.str(v)
	case "utm_campaign":
		a.UTMCampaign = d.str(v)
	case "utm_term":
		a.UTMTerm = d.str(v)
	case "utm_content":
		a.UTMContent = d.str(v)
	case "utm_id":
		a.UTMID = d.str(v)
	case "source":
		a.Source = d.str(v)
	case "medium":
		a.Medium = d.str(v)
	case "campaign":
		a.Campaign = d.str(v)
	case "channel":
		a.Channel = d.str(v)
	case "click_ids":
		d.object(v, d.clickIDs)
	case "fbc":
		a.FBC = d.str(v)
	case "fbp":
		a.FBP = d.str(v)
	case "referrer_kind":
		a.ReferrerKind = d.str(v)
	case "first_touch":
		d.touch(v, &a.FirstTouch)
	case "last_touch":
		d.touch(v, &a.LastTouch)
	}
}

func (d *eventDecoder) clickIDs(k []byte, v *fastjson.Value) {
	c := &d.e.Attribution.ClickIDs
	switch string(k) {
	case "gclid":
		c.GCLID = d.str(v)
	case "gbraid":
		c.GBRAID = d.str(v)
	case "wbraid":
		c.WBRAID = d.str(v)
	case "dclid":
		c.DCLID = d.str(v)
	case "srsltid":
		c.SRSLTID = d.str(v)
	case "fbclid":
		c.FBCLID = d.str(v)
	case "msclkid":
		c.MSCLKID = d.str(v)
	case "ttclid":
		c.TTCLID = d.str(v)
	case "li_fat_id":
		c.LiFatID = d.str(v)
	case "twclid":
		c.TWCLID = d.str(v)
	}
}

func (d *eventDecoder) touch(v *fastjson.Value, t *Touch) {
	d.object(v, func(k []byte, v *fastjson.Value) {
		switch string(k) {
		case "source":
			t.Source = d.str(v)
		case "medium":
			t.Medium = d.str(v)
		case "campaign":
			t.Campaign = d.str(v)
		case "channel":
			t.Channel = d.str(v)
		case "click_id_kind":
			t.ClickIDKind = d.str(v)
		case "at":
			t.At = d.time("touch.at", v)
		}
	})
}

func (d *eventDecoder) context(k []byte, v *fastjson.Value) {
	c := &d.e.Context
	switch string(k) {
	case "user_agent":
		c.UserAgent = d.str(v)
	case "ip":
		c.IP = d.str(v)
	case "ip_hash":
		c.IPHash = d.str(v)
	case "ip_truncated":
		c.IPTruncated = d.str(v)
	case "country":
		c.Country = d.str(v)
	case "region":
		c.Region = d.str(v)
	case "locale":
		c.Locale = d.str(v)
	case "screen":
		c.Screen = d.str(v)
	case "bot":
		c.Bot = v.GetBool()
	case "bot_reason":
		c.BotReason = d.str(v)
	}
}

func (d *eventDecoder) consent(k []byte, v *fastjson.Value) {
	c := &d.e.Consent
	state := func(field string) ConsentState {
		s, ok := ParseConsentState(string(v.GetStringBytes()))
		if !ok {
			d.fail("consent."+field, fmt.Errorf("bad state %q", v.GetStringBytes()))
		}
		return s
	}
	switch string(k) {
	case "analytics":
		c.Analytics = state("analytics")
	case "ads":
		c.Ads = state("ads")
	case "ad_user_data":
		c.AdUserData = state("ad_user_data")
	case "ad_personalization":
		c.AdPersonalization = state("ad_personalization")
	case "gpc":
		c.GPC = v.GetBool()
	case "consent_source":
		c.Source = d.str(v)
	case "gcs":
		c.GCS = d.str(v)
	case "gcd":
		c.GCD = d.str(v)
	case "npa":
		c.NPA = d.str(v)
	case "categories":
		c.Categories = d.props(v, c.Categories)
	}
}

func (d *eventDecoder) userData(k []byte, v *fastjson.Value) {
	u := &d.e.UserData
	switch string(k) {
	case "em":
		u.EM = d.str(v)
	case "ph":
		u.PH = d.str(v)
	case "fn":
		u.FN = d.str(v)
	case "ln":
		u.LN = d.str(v)
	case "ct":
		u.CT = d.str(v)
	case "st":
		u.ST = d.str(v)
	case "zp":
		u.ZP = d.str(v)
	case "country":
		u.Country = d.str(v)
	case "db":
		u.DB = d.str(v)
	case "ge":
		u.GE = d.str(v)
	case "external_id":
		u.ExternalID = d.str(v)
	case "google":
		g := &u.Google
		d.object(v, func(k []byte, v *fastjson.Value) {
			switch string(k) {
			case "em":
				g.EM = d.str(v)
			case "ph":
				g.PH = d.str(v)
			case "fn":
				g.FN = d.str(v)
			case "ln":
				g.LN = d.str(v)
			case "ct":
				g.CT = d.str(v)
			case "st":
				g.ST = d.str(v)
			case "zp":
				g.ZP = d.str(v)
			case "country":
				g.Country = d.str(v)
			}
		})
	}
}

func (d *eventDecoder) commerce(k []byte, v *fastjson.Value) {
	c := &d.e.Commerce
	switch string(k) {
	case "value":
		c.Value = d.opt(v)
	case "currency":
		c.Currency = d.str(v)
	case "transaction_id":
		c.TransactionID = d.str(v)
	case "tax":
		c.Tax = d.opt(v)
	case "shipping":
		c.Shipping = d.opt(v)
	case "coupon":
		c.Coupon = d.str(v)
	case "items":
		for _, x := range v.GetArray() {
			c.Items = append(c.Items, Item{})
			it := &c.Items[len(c.Items)-1]
			d.object(x, func(k []byte, v *fastjson.Value) { d.item(it, k, v) })
		}
	}
}

func (d *eventDecoder) item(it *Item, k []byte, v *fastjson.Value) {
	switch string(k) {
	case "id":
		it.ID = d.str(v)
	case "name":
		it.Name = d.str(v)
	case "brand":
		it.Brand = d.str(v)
	case "category":
		it.Category = d.str(v)
	case "category2":
		it.Category2 = d.str(v)
	case "category3":
		it.Category3 = d.str(v)
	case "category4":
		it.Category4 = d.str(v)
	case "category5":
		it.Category5 = d.str(v)
	case "variant":
		it.Variant = d.str(v)
	case "price":
		it.Price = d.opt(v)
	case "quantity":
		it.Quantity = d.opt(v)
	case "coupon":
		it.Coupon = d.str(v)
	case "discount":
		it.Discount = d.opt(v)
	case "affiliation":
		it.Affiliation = d.str(v)
	case "list_id":
		it.ListID = d.str(v)
	case "list_name":
		it.ListName = d.str(v)
	case "location_id":
		it.LocationID = d.str(v)
	case "index":
		it.Index = d.opt(v)
	}
}

func (d *eventDecoder) ga(k []byte, v *fastjson.Value) {
	g := &d.e.GA
	switch string(k) {
	case "v":
		g.Version = d.str(v)
	case "gtm":
		g.GTM = d.str(v)
	case "seg":
		g.SessionEngaged = v.GetBool()
	case "fv":
		g.FirstVisit = v.GetBool()
	case "ss":
		g.SessionStart = v.GetBool()
	case "et":
		g.EngagementMS = v.GetInt64()
	case "debug":
		g.Debug = v.GetBool()
	}
}

// props decodes an object of scalars into dst (reused), keeping key order;
// nested values keep their compact JSON text.
func (d *eventDecoder) props(v *fastjson.Value, dst Props) Props {
	out := dst[:0]
	d.object(v, func(k []byte, x *fastjson.Value) {
		key := d.e.Intern(k)
		switch x.Type() {
		case fastjson.TypeString:
			out = append(out, Prop{Key: key, Kind: PropString, Str: d.str(x)})
		case fastjson.TypeNumber:
			out = append(out, Prop{Key: key, Kind: PropNumber, Num: x.GetFloat64()})
		case fastjson.TypeTrue, fastjson.TypeFalse:
			out = append(out, Prop{Key: key, Kind: PropBool, Bool: x.GetBool()})
		default:
			out = append(out, Prop{Key: key, Kind: PropString, Str: d.e.Intern(x.MarshalTo(nil))})
		}
	})
	return out
}
