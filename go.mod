module github.com/ferrymq/ferrymq

go 1.26.0
