package enrich

import (
	"strings"
	"testing"

	"github.com/sidetrack/sidetrack/config"
)

func newTestBot(t testing.TB, mode string) *BotStage {
	t.Helper()
	b, err := NewBot(&config.Config{Bots: mode})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Real user agents, as sent by the clients named.
var (
	botUAs = []struct{ ua, reason string }{
		{"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", BotReasonCrawler},
		{"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", BotReasonCrawler},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36", BotReasonCrawler},
		{"Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", BotReasonCrawler},
		{"Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", BotReasonCrawler},
		{"DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", BotReasonCrawler},
		{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)", BotReasonCrawler},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36", BotReasonHeadless},
		{"Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1", BotReasonHeadless},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Cypress/13.6.0 Chrome/114.0.5735.289 Electron/25.8.4 Safari/537.36", BotReasonHeadless},
		{"Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", BotReasonMonitoring},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/61.0.3163.100 Safari/537.36 PingdomPageSpeed/1.0 (pingbot/2.0; +http://www.pingdom.com/)", BotReasonMonitoring},
		{"Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", BotReasonMonitoring},
		{"Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/37.0.2062.120 Safari/537.36 StatusCake", BotReasonMonitoring},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 DatadogSynthetics", BotReasonMonitoring},
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.110 Safari/537.36 Site24x7", BotReasonMonitoring},
		{"Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse", BotReasonMonitoring},
		{"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", BotReasonSEOTool},
		{"Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", BotReasonSEOTool},
		{"Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)", BotReasonSEOTool},
		{"Mozilla/5.0 (compatible; DotBot/1.2; +https://opensiteexplorer.org/dotbot; help@moz.com)", BotReasonSEOTool},
		{"Screaming Frog SEO Spider/19.4", BotReasonSEOTool},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", BotReasonAICrawler},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot", BotReasonAICrawler},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", BotReasonAICrawler},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)", BotReasonAICrawler},
		{"CCBot/2.0 (https://commoncrawl.org/faq/)", BotReasonAICrawler},
		{"Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)", BotReasonAICrawler},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 13_1_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.1 Mobile/15E148 Safari/604.1 (compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot)", BotReasonAICrawler},
		{"meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)", BotReasonAICrawler},
		{"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", BotReasonLinkPreview},
		{"Twitterbot/1.0", BotReasonLinkPreview},
		{"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", BotReasonLinkPreview},
		{"LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)", BotReasonLinkPreview},
		{"Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", BotReasonLinkPreview},
		{"TelegramBot (like TwitterBot)", BotReasonLinkPreview},
		{"curl/8.5.0", BotReasonHTTPLibrary},
		{"Wget/1.21.4", BotReasonHTTPLibrary},
		{"python-requests/2.31.0", BotReasonHTTPLibrary},
		{"Python-urllib/3.11", BotReasonHTTPLibrary},
		{"Go-http-client/1.1", BotReasonHTTPLibrary},
		{"Go-http-client/2.0", BotReasonHTTPLibrary},
		{"axios/1.6.2", BotReasonHTTPLibrary},
		{"node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", BotReasonHTTPLibrary},
		{"Java/17.0.2", BotReasonHTTPLibrary},
		{"Apache-HttpClient/4.5.13 (Java/11.0.15)", BotReasonHTTPLibrary},
		{"PostmanRuntime/7.36.0", BotReasonHTTPLibrary},
		{"libwww-perl/6.72", BotReasonHTTPLibrary},
		{"GuzzleHttp/7", BotReasonHTTPLibrary},
		{"Scrapy/2.11.0 (+https://scrapy.org)", BotReasonCrawler},
		{"SomeCompanyCrawler/2.3 (+https://example.com/crawler)", BotReasonGeneric},
		{"MyAwesomeBot", BotReasonGeneric},
		{"Mozilla/5.0 (compatible; spider; CUBOT fan)", BotReasonGeneric}, // cubot hides its own "bot" only
		{"Mozilla/5.0 (Linux; Android 10; CUBOT_X30) MyBot/1.0", BotReasonGeneric},
		{"   ", BotReasonEmptyUserAgent},
		{"", BotReasonEmptyUserAgent},
	}
	humanUAs = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
		"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0",
		"Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0.4430.210 Mobile Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/21E219 [FBAN/FBIOS;FBAV/460.0.0.38.108;FBBV/593453093;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/595010547]",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 327.0.2.30.93 (iPhone14,2; iOS 17_4; en_US; en; scale=3.00; 1170x2532; 590405245)",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 [Pinterest/Android]",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_34.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US",
		"Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"okhttp/4.9.2", // React Native apps on Android
		"Dalvik/2.1.0 (Linux; U; Android 13; SM-A536B Build/TP1A.220624.014)",
		"MyShopApp/5.2 CFNetwork/1494.0.7 Darwin/23.4.0",
		"analytics-node-next/latest",
		"analytics-go (version: 3.0.0)",
		"analytics-node/3.0.13",
	}
)

func TestBotDetect(t *testing.T) {
	b := newTestBot(t, "flag")
	for _, tc := range botUAs {
		if got := b.Detect(tc.ua); got != tc.reason {
			t.Errorf("Detect(%q) = %q, want %q", tc.ua, got, tc.reason)
		}
	}
	for _, ua := range humanUAs {
		if got := b.Detect(ua); got != "" {
			t.Errorf("Detect(%q) = %q, want human", ua, got)
		}
	}
}

func TestBotApply(t *testing.T) {
	const chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	const googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	tests := []struct {
		name       string
		mode       string
		req        Request
		source     Source
		ctxUA      string
		wantReason string
		wantOut    Outcome
	}{
		{"browser", "flag", Request{UserAgent: chrome}, SourceGA4, "", "", Accepted},
		{"crawler flagged", "flag", Request{UserAgent: googlebot}, SourceGA4, "", BotReasonCrawler, Accepted},
		{"crawler dropped", "drop", Request{UserAgent: googlebot}, SourceGA4, "", BotReasonCrawler, Bot},
		{"empty UA", "flag", Request{}, SourceCollect, "", BotReasonEmptyUserAgent, Accepted},
		{"empty UA dropped", "drop", Request{}, SourceSegment, "", BotReasonEmptyUserAgent, Bot},
		{"payload UA when request has none", "flag", Request{}, SourceForm, chrome, "", Accepted},
		{"payload claims a bot", "flag", Request{UserAgent: chrome}, SourceSegment, googlebot, BotReasonCrawler, Accepted},
		{"server request never judged", "drop", Request{UserAgent: "curl/8.5.0", Server: true}, SourceBackend, "", "", Accepted},
		{"server request with empty UA", "drop", Request{Server: true}, SourceBackend, "", "", Accepted},
		{"backend source never judged", "drop", Request{UserAgent: "Go-http-client/1.1"}, SourceBackend, "", "", Accepted},
	}
	for _, tc := range tests {
		b := newTestBot(t, tc.mode)
		e := &Event{Source: tc.source}
		e.Context.UserAgent = tc.ctxUA
		var res EventResult
		req := tc.req
		b.Apply(&req, e, &res)
		if e.Context.BotReason != tc.wantReason || e.Context.Bot != (tc.wantReason != "") {
			t.Errorf("%s: bot %v reason %q, want %q", tc.name, e.Context.Bot, e.Context.BotReason, tc.wantReason)
		}
		if res.Outcome != tc.wantOut {
			t.Errorf("%s: outcome %v, want %v", tc.name, res.Outcome, tc.wantOut)
		}
		if tc.wantOut == Bot && res.Reason != tc.wantReason {
			t.Errorf("%s: reason %q, want %q", tc.name, res.Reason, tc.wantReason)
		}
	}
}

func TestNewBotConfig(t *testing.T) {
	for _, mode := range []string{"", "flag", "drop"} {
		if _, err := NewBot(&config.Config{Bots: mode}); err != nil {
			t.Errorf("bots: %q: %v", mode, err)
		}
	}
	if _, err := NewBot(&config.Config{Bots: "block"}); err == nil {
		t.Error(`bots: "block" accepted`)
	}
	if _, err := NewBot(nil); err != nil {
		t.Error(err)
	}
}

// naiveBotRank is the obvious implementation the automaton must agree
// with: lower-case the user agent, find every occurrence of every token,
// and drop generic matches that end where an allow token ends.
func naiveBotRank(toks []matchToken, ua string) (rank uint8) {
	l := strings.ToLower(ua)
	allowEnd := map[int]bool{}
	for _, t := range toks {
		if t.rank != rankAllow {
			continue
		}
		for i := 0; i+len(t.tok) <= len(l); i++ {
			if strings.HasPrefix(l[i:], t.tok) {
				allowEnd[i+len(t.tok)] = true
			}
		}
	}
	for _, t := range toks {
		if t.rank == rankAllow {
			continue
		}
		for i := 0; i+len(t.tok) <= len(l); i++ {
			if !strings.HasPrefix(l[i:], t.tok) || (t.rank == rankGeneric && allowEnd[i+len(t.tok)]) {
				continue
			}
			if rank == 0 || t.rank < rank {
				rank = t.rank
			}
		}
	}
	return rank
}

func shippedBotTokens(t testing.TB) []matchToken {
	t.Helper()
	var toks []matchToken
	err := readDataTSV("bots.tsv", 2, 2, func(f []string) error {
		r := uint8(rankAllow)
		for i, name := range botReasons {
			if name == f[1] {
				r = uint8(i + 1)
			}
		}
		toks = append(toks, matchToken{tok: strings.ToLower(f[0]), rank: r})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func TestTokenMatcherAgreesWithNaive(t *testing.T) {
	toks := shippedBotTokens(t)
	m, err := newTokenMatcher(toks)
	if err != nil {
		t.Fatal(err)
	}
	inputs := append([]string{"", "bo", "bot", "BOT", "robot", "cubotbot", "headlesschromeheadless", "xxcurl/yy", "ccbotgptbot"}, humanUAs...)
	for _, tc := range botUAs {
		inputs = append(inputs, tc.ua)
	}
	for _, in := range inputs {
		if got, want := m.match(in), naiveBotRank(toks, in); got != want {
			t.Errorf("match(%q) = %d; naive %d", in, got, want)
		}
	}
}

func FuzzBotMatcher(f *testing.F) {
	for _, tc := range botUAs {
		f.Add(tc.ua)
	}
	for _, ua := range humanUAs {
		f.Add(ua)
	}
	f.Add("\xff\x00CuBoT bOt")
	toks := shippedBotTokens(f)
	m, err := newTokenMatcher(toks)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ua string) {
		if got, want := m.match(ua), naiveBotRank(toks, ua); got != want {
			t.Fatalf("match(%q) = %d; naive %d", ua, got, want)
		}
	})
}

func TestBotNoAlloc(t *testing.T) {
	b := newTestBot(t, "drop")
	for _, ua := range []string{humanUAs[0], botUAs[0].ua, "curl/8.5.0", ""} {
		req := &Request{UserAgent: ua}
		e := &Event{Source: SourceGA4}
		allocs := testing.AllocsPerRun(100, func() {
			e.Context = Context{}
			var res EventResult
			b.Apply(req, e, &res)
		})
		if allocs != 0 {
			t.Errorf("Apply(%q): %v allocs, want 0", ua, allocs)
		}
	}
}

func BenchmarkBot(b *testing.B) {
	st := newTestBot(b, "flag")
	for _, bc := range []struct{ name, ua string }{
		{"chrome", humanUAs[0]},
		{"iphone_instagram", humanUAs[13]},
		{"googlebot", botUAs[1].ua},
		{"curl", "curl/8.5.0"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := &Request{UserAgent: bc.ua}
			e := &Event{Source: SourceGA4}
			var res EventResult
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.ua)))
			for b.Loop() {
				e.Context = Context{}
				st.Apply(req, e, &res)
			}
		})
	}
}
