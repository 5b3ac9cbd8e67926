package enrich

import "testing"

func TestChannelsClassify(t *testing.T) {
	c, err := NewChannels()
	if err != nil {
		t.Fatal(err)
	}
	// GA4's rules, one or more cases per rule, plus the ordering cases
	// where two rules could match.
	tests := []struct {
		source, medium, campaign string
		want                     string
	}{
		{"(direct)", "(none)", "", ChannelDirect},
		{"(direct)", "(not set)", "", ChannelDirect},
		{"(direct)", "cpc", "", ChannelPaidOther},
		{"google", "cpc", "pmax cross-network", ChannelCrossNetwork},
		{"facebook", "social", "summer cross-network", ChannelCrossNetwork},
		{"google", "cpc", "summer_shopping", ChannelPaidShopping},
		{"google", "cpc", "eshop_spring", ChannelPaidShopping},
		{"google", "cpc", "summer-shop", ChannelPaidShopping},
		{"google", "cpc", "shop", ChannelPaidShopping},
		{"google", "cpc", "workshop", ChannelPaidSearch}, // "rkshop": 'k' precedes shop
		{"amazon", "cpc", "", ChannelPaidShopping},
		{"igshopping", "paid", "", ChannelPaidShopping},
		{"google", "cpc", "", ChannelPaidSearch},
		{"bing", "ppc", "", ChannelPaidSearch},
		{"google", "paidsearch", "", ChannelPaidSearch},
		{"google", "retargeting", "", ChannelPaidSearch},
		{"baidu", "cpv", "", ChannelPaidSearch}, // .*cp.*
		{"facebook", "cpc", "", ChannelPaidSocial},
		{"facebook", "paid_social", "", ChannelPaidSocial},
		{"tiktok", "paid_social", "", ChannelPaidSocial},
		{"linkedin", "paid_social", "", ChannelPaidSocial},
		{"twitter", "paid_social", "", ChannelPaidSocial},
		{"instagram", "paid", "", ChannelPaidSocial},
		{"youtube", "cpc", "", ChannelPaidVideo},
		{"vimeo", "paid_video", "", ChannelPaidVideo},
		{"dv360", "display", "", ChannelDisplay},
		{"somenetwork", "banner", "", ChannelDisplay},
		{"somenetwork", "interstitial", "", ChannelDisplay},
		{"somenetwork", "expandable", "", ChannelDisplay},
		{"somenetwork", "cpm", "", ChannelDisplay}, // cpm matches .*cp.* too, Display comes first
		{"newsite", "cpc", "", ChannelPaidOther},
		{"newsite", "paid_other", "", ChannelPaidOther},
		{"amazon", "referral", "", ChannelOrganicShopping},
		{"idealo", "referral", "", ChannelOrganicShopping},
		{"google_shopping", "referral", "", ChannelOrganicShopping},
		{"newsite", "referral", "shopping-spree", ChannelOrganicShopping},
		{"facebook", "referral", "", ChannelOrganicSocial},
		{"l.facebook.com", "referral", "", ChannelOrganicSocial},
		{"facebook", "social", "", ChannelOrganicSocial},
		{"newsite", "social", "", ChannelOrganicSocial},
		{"newsite", "sm", "", ChannelOrganicSocial},
		{"newsite", "social media", "", ChannelOrganicSocial},
		{"newsite", "social-network", "", ChannelOrganicSocial},
		{"youtube", "referral", "", ChannelOrganicVideo},
		{"newsite", "video", "", ChannelOrganicVideo},
		{"newsite", "preroll-video", "", ChannelOrganicVideo},
		{"google", "organic", "", ChannelOrganicSearch},
		{"bing", "referral", "", ChannelOrganicSearch},
		{"brave", "organic", "", ChannelOrganicSearch},
		{"mail.google.com", "referral", "", ChannelOrganicSearch}, // GA4 lists it as search
		{"newsite", "organic", "", ChannelOrganicSearch},
		{"example.com", "referral", "", ChannelReferral},
		{"chatgpt", "referral", "", ChannelReferral},
		{"newsite", "app", "", ChannelReferral},
		{"newsite", "link", "", ChannelReferral},
		{"newsletter", "email", "", ChannelEmail},
		{"gmail", "email", "", ChannelEmail},
		{"email", "(not set)", "", ChannelEmail},
		{"newsite", "e-mail", "", ChannelEmail},
		{"newsite", "e mail", "", ChannelEmail},
		{"e_mail", "newsletter", "", ChannelEmail},
		{"partner", "affiliate", "", ChannelAffiliates},
		{"spotify", "audio", "", ChannelAudio},
		{"newsite", "sms", "", ChannelSMS},
		{"sms", "text", "", ChannelSMS},
		{"newsite", "push", "", ChannelMobilePush},
		{"newsite", "web-push", "", ChannelMobilePush},
		{"newsite", "mobile", "", ChannelMobilePush},
		{"newsite", "notification", "", ChannelMobilePush},
		{"firebase", "x", "", ChannelMobilePush},
		{"newsite", "something", "", ChannelUnassigned},
		{"(not set)", "(not set)", "x", ChannelUnassigned},
		{"", "", "", ChannelUnassigned},
		// Case is not enforced, as in GA4.
		{"Google", "CPC", "", ChannelPaidSearch},
		{"FaceBook", "Social", "", ChannelOrganicSocial},
		{"(DIRECT)", "(NONE)", "", ChannelDirect},
	}
	for _, tc := range tests {
		if got := c.Classify(tc.source, tc.medium, tc.campaign); got != tc.want {
			t.Errorf("Classify(%q, %q, %q) = %q, want %q", tc.source, tc.medium, tc.campaign, got, tc.want)
		}
	}
}

func TestChannelsCategory(t *testing.T) {
	c, err := NewChannels()
	if err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]SourceCategory{
		"google": CategorySearch, "duckduckgo": CategorySearch, "yandex.com.tr": CategorySearch,
		"facebook": CategorySocial, "t.co": CategorySocial, "lnkd.in": CategorySocial, "x.com": CategorySocial,
		"amazon": CategoryShopping, "Google Shopping": CategoryShopping, "IGShopping": CategoryShopping,
		"youtube": CategoryVideo, "twitch.tv": CategoryVideo,
		"example.com": CategoryNone, "": CategoryNone,
	} {
		if got := c.Category(src); got != want {
			t.Errorf("Category(%q) = %d, want %d", src, got, want)
		}
	}
}

func TestIsShoppingCampaign(t *testing.T) {
	for c, want := range map[string]bool{
		"shop": true, "shopping": true, "eshop": true, "e-shop": true, "black_friday_shop": true,
		"workshop": false, "bishop": false, "summer": false, "": false, "workshop shop": true,
		"myshopping": true, "1shop": true,
	} {
		if got := isShoppingCampaign(c); got != want {
			t.Errorf("isShoppingCampaign(%q) = %v, want %v", c, got, want)
		}
	}
}

func BenchmarkChannelsClassify(b *testing.B) {
	c, err := NewChannels()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Classify("google", "organic", "")
		c.Classify("facebook", "paid_social", "spring")
		c.Classify("(direct)", "(none)", "")
	}
}
