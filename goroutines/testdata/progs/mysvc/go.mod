module mysvc

go 1.26
