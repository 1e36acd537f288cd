module example.com/relaunch-example-go

go 1.19
