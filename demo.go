package main

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"time"

	"github.com/sidetrack/sidetrack/config"
)

// demoOrigin is the small shop that `-demo` puts behind sidetrack, so a
// newcomer sees pass-through, beacons and a form event with one command.
type demoOrigin struct {
	srv *http.Server
	ln  net.Listener
}

func startDemoOrigin() (*demoOrigin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		demoPage(w, "Demo shop", `
<p>Welcome to the demo shop. Every page you open here sends a <code>page_viewed</code> beacon to
<code>/collect</code> on this same host; sidetrack writes it to its event log.</p>
<ul>
  <li><a href="/product/42?utm_source=Newsletter&amp;utm_medium=E-Mail&amp;utm_campaign=Winter%20Sale">The blue mug</a>
      (the link carries UTM parameters, as a newsletter link would)</li>
  <li><a href="/contact">Contact us</a> (a plain HTML form; a successful post becomes a <code>lead_submitted</code> event)</li>
</ul>`)
	})
	mux.HandleFunc("GET /product/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := html.EscapeString(r.PathValue("id"))
		demoPage(w, "The blue mug", fmt.Sprintf(`
<p>A very blue mug. 12.50 EUR.</p>
<button id="add" data-id="%s">Add to cart</button>
<script>
document.getElementById('add').onclick = function () {
  track({name: 'add_to_cart', value: 12.5, currency: 'EUR',
         items: [{id: this.dataset.id, name: 'Blue mug', price: 12.5, quantity: 1}]});
  this.textContent = 'Added';
};
</script>
<p><a href="/">Home</a></p>`, id))
	})
	mux.HandleFunc("GET /contact", func(w http.ResponseWriter, r *http.Request) {
		demoPage(w, "Contact", `
<form method="post" action="/contact">
  <label>Email <input name="email" type="email" required></label>
  <label>Message <textarea name="message"></textarea></label>
  <button>Send</button>
</form>`)
	})
	mux.HandleFunc("POST /contact", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil || r.PostForm.Get("email") == "" {
			http.Redirect(w, r, "/contact", http.StatusSeeOther)
			return
		}
		http.Redirect(w, r, "/thanks", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /thanks", func(w http.ResponseWriter, r *http.Request) {
		demoPage(w, "Thank you", `<p>We will get back to you. <a href="/">Home</a></p>`)
	})
	d := &demoOrigin{
		ln:  ln,
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
	}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("demo origin:", err)
		}
	}()
	return d, nil
}

// URL is the origin URL sidetrack proxies to.
func (d *demoOrigin) URL() string { return "http://" + d.ln.Addr().String() }

// Close stops the demo origin.
func (d *demoOrigin) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = d.srv.Shutdown(ctx)
}

// demoForm is the form rule the demo adds for its contact page.
func demoForm() config.Form {
	return config.Form{
		Path:    "/contact",
		Event:   "lead_submitted",
		Fields:  map[string]string{"email": "email"},
		Success: config.FormSuccess{Status: []string{"200-299", "300-399"}, NotLocation: "/contact"},
	}
}

func demoPage(w http.ResponseWriter, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintf(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%s</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}
label{display:block;margin:.5em 0}input,textarea{display:block;width:100%%}</style>
<script>
function track(ev) {
  ev.url = location.href; ev.referrer = document.referrer; ev.title = document.title;
  fetch('/collect', {method: 'POST', body: JSON.stringify(ev), keepalive: true,
                     headers: {'Content-Type': 'application/json'}});
}
track({name: 'page_view'});
</script></head>
<body><h1>%s</h1>%s</body></html>`, html.EscapeString(title), html.EscapeString(title), body)
}
