// promql-check: parses PromQL with Prometheus's own parser, so hack/test-chart.sh catches an alert
// or dashboard expression Prometheus would refuse. Reads a JSON array of expressions on stdin;
// exits 1 naming the first that does not parse.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "stdin is not a JSON array of strings: %v\n", err)
		os.Exit(2)
	}
	for _, e := range exprs {
		if _, err := parser.ParseExpr(e); err != nil {
			fmt.Fprintf(os.Stderr, "%q: %v\n", e, err)
			os.Exit(1)
		}
	}
	fmt.Printf("%d expressions parse\n", len(exprs))
}
