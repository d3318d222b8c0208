// CoreDNS with only the plugins the test node's Corefile uses (hack/node.sh writes it): the
// kubernetes plugin answers Service and Pod names of cluster.local from the API server. Importing
// core/plugin would compile every plugin (cloud DNS providers, etcd, dnstap, ...) for nothing.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
