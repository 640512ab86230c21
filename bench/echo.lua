-- wrk script: POST /echo with a 1 KiB body (1024 bytes of 'x').
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
