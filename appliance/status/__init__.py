"""The built-in status page: static assets (index.html, status.css, status.js; no CDN) and the
handlers serving them, the status JSON and the Prometheus text."""
