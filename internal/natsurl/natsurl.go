// Package natsurl shows NATS URLs safely: what the programs and the Go
// client print of a URL never holds its password.
package natsurl

import (
	"net/url"
	"strings"
)

// Redacted returns urls, a NATS URL or a comma-separated list of them, for
// a log or an error: the password of each URL that has one replaced by
// "xxxxx", and a user with no password, which may be a token, too; as
// -password is never printed either.
func Redacted(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil || (u.User == nil && strings.Contains(p, "@")):
			// Not a URL with a user, yet what comes before an @ may be a
			// password.
			if at := strings.LastIndex(p, "@"); at >= 0 {
				scheme, _, found := strings.Cut(p[:at], "://")
				if !found {
					scheme = ""
				} else {
					scheme += "://"
				}
				parts[i] = strings.TrimSpace(scheme) + "xxxxx" + p[at:]
			}
		case u.User != nil:
			if _, has := u.User.Password(); !has {
				u.User = url.User("xxxxx")
			}
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
