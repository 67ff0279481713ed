-- wrk: the SES stand-in's own capacity, with a SendEmail-sized request (what the dispatcher
-- sends it), so its ceiling is printed beside the figures it takes part in.
local body = '{"FromEmailAddress":"bench@example.com","Destination":{"ToAddresses":["someone@bench.example"]},'
  .. '"Content":{"Simple":{"Subject":{"Data":"Verify your address"},"Body":{"Html":{"Data":"'
  .. string.rep("x", 1500) .. '"},"Text":{"Data":"' .. string.rep("y", 600) .. '"}}}}}'
function request()
  return wrk.format("POST", "/v2/email/outbound-emails", {["Content-Type"] = "application/json"}, body)
end
