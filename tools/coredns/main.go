// Command coredns is CoreDNS built with only the plugins the bunny/relay lab and its
// deployment snippets use. It is CoreDNS's own server (coremain), not a rewrite: the
// upstream build (`go install github.com/coredns/coredns`) compiles in every plugin,
// with the cloud SDKs of route53, azure, clouddns and kubernetes, which takes far
// longer on a small CI machine than the lab can afford.
//
// The CoreDNS release is pinned in go.mod; tools/install.sh (`make tools`) builds this
// into .tools/bin/coredns.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/acl"
	_ "github.com/coredns/coredns/plugin/any"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/chaos"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/erratic"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/root"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives is the order in which plugins see a query. It is the upstream order
// (core/dnsserver/zdirectives.go of the pinned release) with every plugin that is not
// compiled in left out; a plugin missing here cannot be used in a Corefile at all.
// "prometheus" is the directive of the metrics package; metadata, dnstap and transfer
// come in with forward and file, and are listed so that they can be configured too.
var directives = []string{
	"root",
	"metadata",
	"reload",
	"bind",
	"debug",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"dnstap",
	"any",
	"chaos",
	"loadbalance",
	"rewrite",
	"acl",
	"cache",
	"template",
	"transfer",
	"hosts",
	"file",
	"loop",
	"forward",
	"erratic",
	"whoami",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
