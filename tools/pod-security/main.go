// Command pod-security-check evaluates Kubernetes manifests against a Pod Security
// Standard with the Pod Security Admission library, the same code kube-apiserver's
// PodSecurity admission runs (k8s.io/pod-security-admission, pinned in go.mod), so
// `helm template … | pod-security-check` answers "would a namespace labelled
// pod-security.kubernetes.io/enforce=restricted admit these pods?" without a cluster.
//
// It reads YAML or JSON documents (several per stream, "---" between them) from the
// files named, or from standard input, and prints one JSON object per workload:
//
//	{"object": "Deployment/relay", "level": "restricted", "version": "latest",
//	 "allowed": false, "violations": [{"reason": "...", "detail": "..."}]}
//
// Objects that carry no pod template (Services, ConfigMaps, …) are skipped. The exit
// status is 1 when any workload is forbidden, 2 on a usage or parse error.
//
// tools/install-deploy-tools.sh (`make deploy-tools`) builds this into .tools/bin.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

type violation struct {
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

type verdict struct {
	Object     string      `json:"object"`
	Level      string      `json:"level"`
	Version    string      `json:"version"`
	Allowed    bool        `json:"allowed"`
	Violations []violation `json:"violations"`
}

// podTemplate returns the pod metadata and spec an object would create, or ok=false
// for an object that creates no pods.
func podTemplate(kind string, doc []byte) (meta *metav1.ObjectMeta, spec *corev1.PodSpec, name string, ok bool, err error) {
	switch kind {
	case "Pod":
		var o corev1.Pod
		err = yaml.UnmarshalStrict(doc, &o)
		return &o.ObjectMeta, &o.Spec, o.Name, true, err
	case "Deployment":
		var o appsv1.Deployment
		err = yaml.UnmarshalStrict(doc, &o)
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name, true, err
	case "StatefulSet":
		var o appsv1.StatefulSet
		err = yaml.UnmarshalStrict(doc, &o)
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name, true, err
	case "DaemonSet":
		var o appsv1.DaemonSet
		err = yaml.UnmarshalStrict(doc, &o)
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name, true, err
	case "ReplicaSet":
		var o appsv1.ReplicaSet
		err = yaml.UnmarshalStrict(doc, &o)
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name, true, err
	case "Job":
		var o batchv1.Job
		err = yaml.UnmarshalStrict(doc, &o)
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, o.Name, true, err
	case "CronJob":
		var o batchv1.CronJob
		err = yaml.UnmarshalStrict(doc, &o)
		t := &o.Spec.JobTemplate.Spec.Template
		return &t.ObjectMeta, &t.Spec, o.Name, true, err
	}
	return nil, nil, "", false, nil
}

func check(r io.Reader, source string, evaluator policy.Evaluator, lv api.LevelVersion, out *json.Encoder) (forbidden bool, err error) {
	decoder := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for {
		doc, err := decoder.Read()
		if errors.Is(err, io.EOF) {
			return forbidden, nil
		}
		if err != nil {
			return forbidden, fmt.Errorf("%s: %w", source, err)
		}
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return forbidden, fmt.Errorf("%s: %w", source, err)
		}
		meta, spec, name, ok, err := podTemplate(head.Kind, doc)
		if err != nil {
			return forbidden, fmt.Errorf("%s: %s %q: %w", source, head.Kind, name, err)
		}
		if !ok {
			continue
		}
		result := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, meta, spec))
		v := verdict{
			Object:     head.Kind + "/" + name,
			Level:      string(lv.Level),
			Version:    lv.Version.String(),
			Allowed:    result.Allowed,
			Violations: []violation{},
		}
		for _, reason := range result.ForbiddenReasons {
			v.Violations = append(v.Violations, violation{Reason: reason})
		}
		for i, detail := range result.ForbiddenDetails {
			if i < len(v.Violations) {
				v.Violations[i].Detail = detail
			}
		}
		forbidden = forbidden || !result.Allowed
		if err := out.Encode(v); err != nil {
			return forbidden, err
		}
	}
}

func main() {
	levelFlag := flag.String("level", "restricted", "the Pod Security Standard: baseline or restricted")
	versionFlag := flag.String("version", "latest", `the standard's version, "latest" or "v1.N"`)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [-level L] [-version V] [FILE...]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()

	level, err := api.ParseLevel(*levelFlag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pod-security-check: -level: %v\n", err)
		os.Exit(2)
	}
	version, err := api.ParseVersion(*versionFlag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pod-security-check: -version: %v\n", err)
		os.Exit(2)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pod-security-check: %v\n", err)
		os.Exit(2)
	}
	lv := api.LevelVersion{Level: level, Version: version}
	out := json.NewEncoder(os.Stdout)

	forbidden := false
	run := func(r io.Reader, source string) {
		bad, err := check(r, source, evaluator, lv, out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pod-security-check: %v\n", err)
			os.Exit(2)
		}
		forbidden = forbidden || bad
	}
	if flag.NArg() == 0 {
		run(os.Stdin, "<stdin>")
	}
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pod-security-check: %v\n", err)
			os.Exit(2)
		}
		run(f, name)
		f.Close()
	}
	if forbidden {
		os.Exit(1)
	}
}
