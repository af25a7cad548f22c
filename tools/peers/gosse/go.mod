module sseloop/tools/peers/gosse

go 1.19
