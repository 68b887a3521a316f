// Command ringkv-controlplane is a multi-call binary holding an upstream
// Kubernetes control plane for ringkv's end-to-end tests: an embedded etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.
//
// The component is chosen by the name the binary is run as (symlinks named
// kubectl, etcd, ...) or by the first argument:
//
//	ringkv-controlplane kube-apiserver --etcd-servers=...
//	ln -s ringkv-controlplane kubectl && ./kubectl get pods
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	_ "time/tzdata" // CronJob time zones, as in upstream's mains

	"go.etcd.io/etcd/server/v3/embed"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var commands = map[string]func() int{
	"etcd":                    runEtcd,
	"kube-apiserver":          func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-controller-manager": func() int { return cli.Run(controllermanager.NewControllerManagerCommand()) },
	"kube-scheduler":          func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubectl":                 runKubectl,
}

func main() {
	run, ok := commands[filepath.Base(os.Args[0])]
	if !ok && len(os.Args) > 1 {
		if run, ok = commands[os.Args[1]]; ok {
			os.Args = os.Args[1:] // the components parse os.Args themselves
		}
	}
	if !ok {
		fmt.Fprintln(os.Stderr, "usage: ringkv-controlplane etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubectl [flags]")
		os.Exit(2)
	}
	os.Exit(run())
}

// runKubectl is upstream's cmd/kubectl main.
func runKubectl() int {
	logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
	if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
		kubectlutil.CheckErr(err) // prints and exits non-zero
	}
	return 0
}

// runEtcd runs a single-member etcd until SIGTERM or SIGINT.
func runEtcd() int {
	fs := flag.NewFlagSet("etcd", flag.ExitOnError)
	dataDir := fs.String("data-dir", "default.etcd", "data directory")
	clientURL := fs.String("listen-client-url", "http://127.0.0.1:2379", "client URL, also advertised")
	peerURL := fs.String("listen-peer-url", "http://127.0.0.1:2380", "peer URL, also advertised")
	noFsync := fs.Bool("unsafe-no-fsync", false, "disable fsync (test clusters only)")
	fs.Parse(os.Args[1:]) // nolint:errcheck // ExitOnError

	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.UnsafeNoFsync = *noFsync
	for _, u := range []struct {
		raw  string
		dsts []*[]url.URL
	}{
		{*clientURL, []*[]url.URL{&cfg.ListenClientUrls, &cfg.AdvertiseClientUrls}},
		{*peerURL, []*[]url.URL{&cfg.ListenPeerUrls, &cfg.AdvertisePeerUrls}},
	} {
		parsed, err := url.Parse(u.raw)
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd: bad URL %q: %v\n", u.raw, err)
			return 2
		}
		for _, dst := range u.dsts {
			*dst = []url.URL{*parsed}
		}
	}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
	defer e.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving %s\n", *clientURL)
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %v before ready\n", s)
		return 0
	}
	select {
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", s)
		return 0
	}
}
