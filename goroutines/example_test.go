package goroutines_test

import (
	"fmt"
	"strings"

	"github.com/spindlehq/spindle/goroutines"
)

func ExampleAnalyze() {
	dump := `goroutine 7 [chan send, 12 minutes]:
main.(*hub).deliver(...)
	/src/app/hub.go:26
created by main.(*hub).publisher in goroutine 6
	/src/app/hub.go:33 +0x8e

goroutine 8 [chan send, 14 minutes]:
main.(*hub).deliver(...)
	/src/app/hub.go:26
created by main.(*hub).publisher in goroutine 6
	/src/app/hub.go:33 +0x8e

goroutine 6 [chan receive]:
main.(*hub).publisher(0xc000010000, 0xc000020000)
	/src/app/hub.go:30 +0x45
created by main.main in goroutine 1
	/src/app/main.go:12 +0x9c
`
	r, err := goroutines.Analyze(strings.NewReader(dump), goroutines.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Total, r.States)
	for _, g := range r.Groups {
		fmt.Println(g.Count, g.State, g.TopFunction, "creator groups:", g.CreatorGroups)
	}
	fmt.Println(r.Suspects[0].Reason)
	// Output:
	// 3 map[chan receive:1 chan send:2]
	// 2 chan send main.(*hub).deliver creator groups: [2]
	// 1 chan receive main.(*hub).publisher creator groups: []
	// 2 goroutines blocked sending on a channel in main.(*hub).deliver at /src/app/hub.go:26 for ≥ 12 minutes
}
