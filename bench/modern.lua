-- wrk: every request a 2026-07-28 tools/call (no session) that names its tool in Mcp-Name,
-- routed by that header: Tether by a [[routes]] entry (with header validation on), HAProxy by
-- an ACL on req.hdr(mcp-name).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "report_weekly"
wrk.body = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"report_weekly","arguments":{"text":"hello, load balancer"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
