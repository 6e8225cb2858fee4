// A small API Management gateway emulator for the test suite (tests/policy_runtime/runtime.py).
//
// It runs the composed policy of one API (global -> product -> API, <base /> and include-fragment
// already expanded by runtime.py, named values substituted, every @(...)/@{...} replaced by "@#N",
// the N-th method of Apim.Policies.Expressions) through the gateway sequence:
// inbound -> backend -> outbound, and on-error when a policy fails. The backend is the scenario's
// list of responses (one per forward-request, so retries see "429 then 200"). What the gateway
// did is written as JSON: the log-to-eventhub messages, the forwarded requests, the final response,
// the retry waits, the last error and any expression that threw.
//
//   mono gateway.exe run   < scenarios.json   (a JSON array; prints an array of results)
//   mono gateway.exe check allowed-types.txt  (prints every type or member the expressions use
//                                             that APIM's allow-list does not have)
//
// Only the policies the repository uses are emulated; any other policy element is an error, so a
// new policy cannot be silently skipped.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Reflection.Emit;
using System.Text;
using System.Xml.Linq;
using Apim.Documented;
using Newtonsoft.Json.Linq;

namespace Apim.Emulator
{
    sealed class Url : IUrl
    {
        public string Scheme { get; set; }
        public string Host { get; set; }
        public int Port { get; set; }
        public string Path { get; set; }
        public Dictionary<string, string[]> QueryValues = new Dictionary<string, string[]>(StringComparer.OrdinalIgnoreCase);
        public IReadOnlyDictionary<string, string[]> Query { get { return QueryValues; } }
        public string QueryString
        {
            get
            {
                if (QueryValues.Count == 0) { return ""; }
                return "?" + string.Join("&", QueryValues.SelectMany(q => q.Value.Select(v => Uri.EscapeDataString(q.Key) + "=" + Uri.EscapeDataString(v))));
            }
        }

        public static Url Parse(string text)
        {
            var uri = new Uri(text);
            var url = new Url { Scheme = uri.Scheme, Host = uri.Host, Port = uri.Port, Path = Uri.UnescapeDataString(uri.AbsolutePath) };
            foreach (var pair in uri.Query.TrimStart('?').Split(new[] { '&' }, StringSplitOptions.RemoveEmptyEntries))
            {
                var eq = pair.IndexOf('=');
                var name = Uri.UnescapeDataString(eq < 0 ? pair : pair.Substring(0, eq));
                var value = eq < 0 ? "" : Uri.UnescapeDataString(pair.Substring(eq + 1));
                string[] old;
                url.QueryValues[name] = url.QueryValues.TryGetValue(name, out old) ? old.Concat(new[] { value }).ToArray() : new[] { value };
            }
            return url;
        }

        public Url Copy()
        {
            var copy = (Url)MemberwiseClone();
            copy.QueryValues = new Dictionary<string, string[]>(QueryValues, StringComparer.OrdinalIgnoreCase);
            return copy;
        }

        public override string ToString() { return Scheme + "://" + Host + Path + QueryString; }
    }

    /// <summary>A message body; reading it without preserveContent consumes it, as in APIM.</summary>
    sealed class Body : IMessageBody
    {
        readonly string text;
        public bool Consumed { get; private set; }
        public Body(string text) { this.text = text; }
        public string Peek() { return Consumed ? "" : text; }

        public T As<T>(bool preserveContent = false)
        {
            if (Consumed) { throw new InvalidOperationException("the message body was already read without preserveContent: true"); }
            if (!preserveContent) { Consumed = true; }
            object value;
            if (typeof(T) == typeof(string)) { value = text; }
            else if (typeof(T) == typeof(byte[])) { value = Encoding.UTF8.GetBytes(text); }
            else if (typeof(T) == typeof(JObject)) { value = JObject.Parse(text); }
            else if (typeof(T) == typeof(JArray)) { value = JArray.Parse(text); }
            else if (typeof(T) == typeof(JToken)) { value = JToken.Parse(text); }
            else if (typeof(T) == typeof(XDocument)) { value = XDocument.Parse(text); }
            else if (typeof(T) == typeof(XElement) || typeof(T) == typeof(XNode)) { value = XElement.Parse(text); }
            else { throw new NotSupportedException("IMessageBody.As<" + typeof(T).Name + "> is not documented"); }
            return (T)value;
        }
    }

    sealed class Request : IRequest
    {
        public Body RequestBody;
        public IMessageBody Body { get { return RequestBody; } }
        public System.Security.Cryptography.X509Certificates.X509Certificate2 Certificate { get { return null; } }
        public Dictionary<string, string[]> HeaderValues = new Dictionary<string, string[]>(StringComparer.OrdinalIgnoreCase);
        public IReadOnlyDictionary<string, string[]> Headers { get { return HeaderValues; } }
        public string IpAddress { get; set; }
        public Dictionary<string, string> Matched = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        public IReadOnlyDictionary<string, string> MatchedParameters { get { return Matched; } }
        public string Method { get; set; }
        public Url Original;
        public Url Current;
        public IUrl OriginalUrl { get { return Original; } }
        public IUrl Url { get { return Current; } }
        public IPrivateEndpointConnection PrivateEndpointConnection { get { return null; } }
    }

    sealed class Response : IResponse
    {
        public Body ResponseBody;
        public IMessageBody Body { get { return ResponseBody; } }
        public Dictionary<string, string[]> HeaderValues = new Dictionary<string, string[]>(StringComparer.OrdinalIgnoreCase);
        public IReadOnlyDictionary<string, string[]> Headers { get { return HeaderValues; } }
        public int StatusCode { get; set; }
        public string StatusReason { get; set; }
    }

    sealed class Subscription : ISubscription
    {
        public DateTime CreatedDate { get; set; }
        public DateTime? EndDate { get; set; }
        public string Id { get; set; }
        public string Key { get; set; }
        public string Name { get; set; }
        public string PrimaryKey { get; set; }
        public string SecondaryKey { get; set; }
        public DateTime? StartDate { get; set; }
    }

    sealed class Named : IApi, IOperation, IProduct, IUser, IDeployment, IGroup
    {
        public string Id { get; set; }
        public string Name { get; set; }
        public string Path { get; set; }
        public bool IsCurrentRevision { get { return true; } }
        public IEnumerable<string> Protocols { get { return new[] { "https" }; } }
        public string Revision { get { return "1"; } }
        public IUrl ServiceUrl { get; set; }
        public ISubscriptionKeyParameterNames SubscriptionKeyParameterNames { get { return null; } }
        public string Version { get { return ""; } }
        public string Method { get; set; }
        public string UrlTemplate { get; set; }
        public IEnumerable<IApi> Apis { get { return new IApi[0]; } }
        public bool ApprovalRequired { get { return false; } }
        public IEnumerable<IGroup> Groups { get { return new IGroup[0]; } }
        public ProductState State { get { return ProductState.Published; } }
        public int? SubscriptionLimit { get { return null; } }
        public bool SubscriptionRequired { get { return true; } }
        public string Email { get; set; }
        public string FirstName { get; set; }
        public IEnumerable<IUserIdentity> Identities { get { return new IUserIdentity[0]; } }
        public string LastName { get; set; }
        public string Note { get { return ""; } }
        public DateTime RegistrationDate { get { return new DateTime(2026, 1, 5, 0, 0, 0, DateTimeKind.Utc); } }
        public string GatewayId { get { return "managed"; } }
        public string Region { get; set; }
        public string ServiceName { get; set; }
        public IReadOnlyDictionary<string, System.Security.Cryptography.X509Certificates.X509Certificate2> Certificates
        {
            get { return new Dictionary<string, System.Security.Cryptography.X509Certificates.X509Certificate2>(); }
        }
    }

    sealed class LastError : ILastError
    {
        public string Source { get; set; }
        public string Reason { get; set; }
        public string Message { get; set; }
        public string Scope { get; set; }
        public string Section { get; set; }
        public string Path { get; set; }
        public string PolicyId { get; set; }
    }

    sealed class Context : IProxyRequestContext
    {
        public IApi Api { get; set; }
        public IDeployment Deployment { get; set; }
        public TimeSpan Elapsed { get; set; }
        public LastError Error;
        public ILastError LastError { get { return Error; } }
        public IOperation Operation { get; set; }
        public IProduct Product { get; set; }
        public Request Req;
        public IRequest Request { get { return Req; } }
        public Guid RequestId { get; set; }
        public Response Resp;
        public IResponse Response { get { return Resp; } }
        public ISubscription Subscription { get; set; }
        public DateTime Timestamp { get; set; }
        public bool Tracing { get { return false; } }
        public IUser User { get; set; }
        public Dictionary<string, object> VariableValues = new Dictionary<string, object>();
        public IReadOnlyDictionary<string, object> Variables { get { return VariableValues; } }
        public List<string> Traces = new List<string>();
        public void Trace(string message) { Traces.Add(message); }
    }

    /// <summary>A policy failed: the gateway stops the section and runs on-error.</summary>
    sealed class PolicyError : Exception
    {
        public readonly string Source_, Reason;
        public readonly int Status;
        public readonly string RetryAfter;
        public PolicyError(string source, string reason, int status, string message, string retryAfter = null) : base(message)
        {
            Source_ = source; Reason = reason; Status = status; RetryAfter = retryAfter;
        }
    }

    /// <summary>return-response: the gateway answers now; no later policy (nor outbound) runs.</summary>
    sealed class ReturnResponse : Exception
    {
    }

    sealed class Gateway
    {
        // The internal cache (cache-lookup-value / cache-store-value), shared by the scenarios of one
        // run as APIM's cache is shared by requests; entries expire by the scenarios' timestamps.
        static readonly Dictionary<string, Tuple<object, DateTime>> Cache = new Dictionary<string, Tuple<object, DateTime>>();
        readonly JArray sent = new JArray(), cacheLog = new JArray();
        readonly Queue<JObject> services = new Queue<JObject>();
        readonly XElement plan;
        readonly JObject scenario;
        readonly Context context = new Context();
        readonly Queue<JObject> backend = new Queue<JObject>();
        readonly JArray events = new JArray(), forwarded = new JArray(), waits = new JArray(), expressionErrors = new JArray();
        string section = "inbound";

        public Gateway(XElement plan, JObject scenario)
        {
            this.plan = plan;
            this.scenario = scenario;
            foreach (var r in (JArray)scenario["backend"] ?? new JArray()) { backend.Enqueue((JObject)r); }
            foreach (var r in (JArray)scenario["sendRequest"] ?? new JArray()) { services.Enqueue((JObject)r); }
            var req = (JObject)scenario["request"];
            var request = new Request { Method = (string)req["method"] ?? "POST", IpAddress = (string)req["ip"] ?? "203.0.113.7" };
            request.Original = Url.Parse((string)req["url"]);
            request.Current = request.Original.Copy();
            foreach (var h in (JObject)req["headers"] ?? new JObject()) { request.HeaderValues[h.Key] = new[] { (string)h.Value }; }
            foreach (var p in (JObject)req["matchedParameters"] ?? new JObject()) { request.Matched[p.Key] = (string)p.Value; }
            var body = req["body"];
            request.RequestBody = body == null || body.Type == JTokenType.Null ? null : new Body((string)body);
            context.Req = request;
            context.RequestId = Guid.Parse((string)scenario["requestId"]);
            context.Timestamp = DateTime.Parse((string)scenario["timestamp"], null, System.Globalization.DateTimeStyles.AdjustToUniversal | System.Globalization.DateTimeStyles.AssumeUniversal);
            context.Elapsed = TimeSpan.FromMilliseconds((double)(scenario["elapsedMs"] ?? 1000));
            context.Deployment = new Named { ServiceName = (string)scenario["gateway"]["service"], Region = (string)scenario["gateway"]["region"] };
            var sub = scenario["subscription"] as JObject;
            if (sub != null) { context.Subscription = new Subscription { Id = (string)sub["id"], Name = (string)sub["name"], CreatedDate = new DateTime(2026, 1, 5) }; }
            context.Product = new Named { Id = (string)scenario["product"], Name = (string)scenario["product"] };
            context.Api = new Named { Id = (string)scenario["api"], Name = (string)scenario["api"], Path = "openai" };
            context.Operation = new Named { Id = (string)scenario["operation"], Name = (string)scenario["operation"], Method = request.Method };
            var user = scenario["user"] as JObject;
            if (user != null) { context.User = new Named { Id = (string)user["id"], Email = (string)user["email"] }; }
        }

        object Evaluate(string value, XElement at)
        {
            if (value == null || !value.StartsWith("@#")) { return value; }
            var index = int.Parse(value.Substring(2));
            try { return Apim.Policies.ExpressionTable.Table[index](context); }
            catch (Exception e)
            {
                expressionErrors.Add(new JObject(new JProperty("expression", Apim.Policies.ExpressionTable.Origins[index]),
                                                 new JProperty("error", e.GetType().Name + ": " + e.Message)));
                throw new PolicyError(at.Name.LocalName, "ExpressionValueEvaluationFailure", 500, e.Message);
            }
        }

        string Attr(XElement e, string name) { var a = e.Attribute(name); return a == null ? null : a.Value; }
        string Text(XElement e) { return Evaluate(e.Value.Trim(), e) as string ?? Convert.ToString(Evaluate(e.Value.Trim(), e)); }

        JObject Reject(string policy, XElement at)
        {
            var reject = scenario["reject"] as JObject;
            if (reject == null || (string)reject["policy"] != policy) { return null; }
            var scope = (string)reject["scope"];
            if (scope != null && scope != Attr(at, "_scope")) { return null; }
            return reject;
        }

        void Execute(XElement policy)
        {
            var name = policy.Name.LocalName;
            switch (name)
            {
                case "choose":
                    foreach (var when in policy.Elements("when"))
                    {
                        if ((bool)Evaluate(Attr(when, "condition"), when)) { ExecuteAll(when); return; }
                    }
                    var otherwise = policy.Element("otherwise");
                    if (otherwise != null) { ExecuteAll(otherwise); }
                    return;
                case "set-variable":
                    context.VariableValues[Attr(policy, "name")] = Evaluate(Attr(policy, "value"), policy);
                    return;
                case "rate-limit-by-key":
                case "azure-openai-token-limit":
                {
                    var key = Evaluate(Attr(policy, "counter-key"), policy) as string;
                    if (string.IsNullOrEmpty(key)) { throw new PolicyError(name, "EmptyCounterKey", 500, "counter-key evaluated to an empty value"); }
                    var reject = Reject(name, policy);
                    if (reject != null)
                    {
                        throw new PolicyError(name, (string)reject["reason"] ?? "RateLimitExceeded", (int)(reject["status"] ?? 429),
                                              "Rate limit is exceeded. Try again in " + (string)reject["retryAfter"] + " seconds.", (string)reject["retryAfter"]);
                    }
                    return;
                }
                case "validate-jwt":
                {
                    var header = context.Req.Headers.GetValueOrDefault(Attr(policy, "header-name"), "");
                    if (header.Length == 0) { throw new PolicyError(name, "TokenNotPresent", 401, Attr(policy, "failed-validation-error-message")); }
                    var claims = scenario["jwtClaims"] as JObject;
                    if (claims == null) { throw new PolicyError(name, "TokenSignatureInvalid", 401, Attr(policy, "failed-validation-error-message")); }
                    var map = claims.Properties().ToDictionary(p => p.Name, p => new[] { (string)p.Value });
                    var jwtCtor = typeof(Jwt).GetConstructors(BindingFlags.NonPublic | BindingFlags.Instance)[0];
                    var variable = Attr(policy, "output-token-variable-name");
                    if (variable != null) { context.VariableValues[variable] = jwtCtor.Invoke(new object[] { (IReadOnlyDictionary<string, string[]>)map }); }
                    return;
                }
                case "set-query-parameter":
                {
                    var qname = Attr(policy, "name");
                    var action = Attr(policy, "exists-action") ?? "override";
                    var values = policy.Elements("value").Select(Text).ToArray();
                    var exists = context.Req.Current.QueryValues.ContainsKey(qname);
                    if (action == "delete") { context.Req.Current.QueryValues.Remove(qname); }
                    else if (action == "skip" && exists) { }
                    else if (action == "append" && exists) { context.Req.Current.QueryValues[qname] = context.Req.Current.QueryValues[qname].Concat(values).ToArray(); }
                    else { context.Req.Current.QueryValues[qname] = values; }
                    return;
                }
                case "set-header":
                {
                    var hname = Attr(policy, "name");
                    var action = Attr(policy, "exists-action") ?? "override";
                    var target = section == "inbound" || section == "backend" ? context.Req.HeaderValues : context.Resp.HeaderValues;
                    var values = policy.Elements("value").Select(Text).ToArray();
                    if (action == "delete") { target.Remove(hname); }
                    else if (action == "skip" && target.ContainsKey(hname)) { }
                    else if (action == "append" && target.ContainsKey(hname)) { target[hname] = target[hname].Concat(values).ToArray(); }
                    else { target[hname] = values; }
                    return;
                }
                case "set-body":
                {
                    var text = Text(policy);
                    if (section == "inbound" || section == "backend") { context.Req.RequestBody = new Body(text); }
                    else { context.Resp.ResponseBody = new Body(text); }
                    return;
                }
                case "set-backend-service":
                    context.VariableValues["__backend-id"] = Attr(policy, "backend-id") ?? Attr(policy, "base-url");
                    return;
                case "authentication-managed-identity":
                    context.Req.HeaderValues["Authorization"] = new[] { "Bearer <managed identity token for " + Attr(policy, "resource") + ">" };
                    return;
                case "retry":
                {
                    var count = int.Parse(Attr(policy, "count"));
                    var firstFast = string.Equals(Attr(policy, "first-fast-retry"), "true", StringComparison.OrdinalIgnoreCase);
                    ExecuteAll(policy);
                    for (var attempt = 0; attempt < count && (bool)Evaluate(Attr(policy, "condition"), policy); attempt++)
                    {
                        var interval = Convert.ToInt32(Evaluate(Attr(policy, "interval"), policy));
                        waits.Add(attempt == 0 && firstFast ? 0 : interval);
                        ExecuteAll(policy);
                    }
                    return;
                }
                case "forward-request":
                    Forward();
                    return;
                case "log-to-eventhub":
                {
                    var key = Evaluate(Attr(policy, "partition-key"), policy);
                    var message = Text(policy);
                    events.Add(new JObject(new JProperty("loggerId", Attr(policy, "logger-id")),
                                           new JProperty("partitionKey", key),
                                           new JProperty("message", message)));
                    return;
                }
                case "cache-lookup-value":
                {
                    var key = Evaluate(Attr(policy, "key"), policy) as string;
                    Tuple<object, DateTime> entry;
                    var hit = Cache.TryGetValue(key, out entry) && entry.Item2 > context.Timestamp;
                    cacheLog.Add(new JObject(new JProperty("lookup", key), new JProperty("hit", hit)));
                    if (hit) { context.VariableValues[Attr(policy, "variable-name")] = entry.Item1; }
                    else if (Attr(policy, "default-value") != null) { context.VariableValues[Attr(policy, "variable-name")] = Evaluate(Attr(policy, "default-value"), policy); }
                    return;
                }
                case "cache-store-value":
                {
                    var key = Evaluate(Attr(policy, "key"), policy) as string;
                    var seconds = Convert.ToInt32(Evaluate(Attr(policy, "duration"), policy));
                    Cache[key] = Tuple.Create(Evaluate(Attr(policy, "value"), policy), context.Timestamp.AddSeconds(seconds));
                    cacheLog.Add(new JObject(new JProperty("store", key), new JProperty("seconds", seconds)));
                    return;
                }
                case "send-request":
                {
                    // The scenario's "sendRequest" list answers, in order: {"status", "body"} or {"timeout": true}.
                    var url = Text(policy.Element("set-url"));
                    var method = policy.Element("set-method") == null ? "GET" : Text(policy.Element("set-method"));
                    var headers = new JObject(policy.Elements("set-header").Select(h => new JProperty(Attr(h, "name"), string.Join(",", h.Elements("value").Select(Text)))));
                    var timeout = Convert.ToInt32(Evaluate(Attr(policy, "timeout") ?? "60", policy));
                    sent.Add(new JObject(new JProperty("url", url), new JProperty("method", method), new JProperty("headers", headers), new JProperty("timeout", timeout)));
                    var variable = Attr(policy, "response-variable-name");
                    var answer = services.Count > 0 ? services.Dequeue() : new JObject(new JProperty("timeout", true));
                    if (answer["timeout"] != null && (bool)answer["timeout"])
                    {
                        if (!string.Equals(Attr(policy, "ignore-error"), "true", StringComparison.OrdinalIgnoreCase))
                        {
                            throw new PolicyError(name, "Timeout", 500, "send-request timed out after " + timeout + " s");
                        }
                        context.VariableValues[variable] = null;  // ignore-error: the variable is null
                        return;
                    }
                    var response = new Response { StatusCode = (int)answer["status"], StatusReason = "" };
                    foreach (var h in (JObject)answer["headers"] ?? new JObject()) { response.HeaderValues[h.Key] = new[] { (string)h.Value }; }
                    var body = answer["body"];
                    response.ResponseBody = body == null || body.Type == JTokenType.Null ? null : new Body((string)body);
                    context.VariableValues[variable] = response;
                    return;
                }
                case "return-response":
                {
                    var response = new Response { StatusCode = 200, StatusReason = "OK" };
                    foreach (var child in policy.Elements())
                    {
                        switch (child.Name.LocalName)
                        {
                            case "set-status":
                                response.StatusCode = int.Parse(Attr(child, "code"));
                                response.StatusReason = Attr(child, "reason") ?? "";
                                break;
                            case "set-header":
                                response.HeaderValues[Attr(child, "name")] = child.Elements("value").Select(Text).ToArray();
                                break;
                            case "set-body":
                                response.ResponseBody = new Body(Text(child));
                                break;
                            default:
                                throw new NotSupportedException("the emulator does not implement <" + child.Name.LocalName + "> in return-response");
                        }
                    }
                    context.Resp = response;
                    throw new ReturnResponse();
                }
                default:
                    throw new NotSupportedException("the emulator does not implement the policy <" + name + ">");
            }
        }

        void Forward()
        {
            var req = context.Req;
            if (backend.Count == 0) { throw new PolicyError("forward-request", "BackendConnectionFailure", 500, "no backend response left in the scenario"); }
            var next = backend.Dequeue();
            req.Current.Scheme = "https";
            req.Current.Host = (string)next["host"];
            req.Current.Port = 443;
            forwarded.Add(new JObject(
                new JProperty("url", req.Current.ToString()),
                new JProperty("headers", new JObject(req.HeaderValues.Select(h => new JProperty(h.Key, string.Join(",", h.Value))))),
                new JProperty("body", req.RequestBody == null ? null : req.RequestBody.Peek())));
            var response = new Response { StatusCode = (int)next["status"], StatusReason = "" };
            foreach (var h in (JObject)next["headers"] ?? new JObject()) { response.HeaderValues[h.Key] = new[] { (string)h.Value }; }
            var body = next["body"];
            response.ResponseBody = body == null || body.Type == JTokenType.Null ? null : new Body((string)body);
            context.Resp = response;
        }

        void ExecuteAll(XElement parent) { foreach (var child in parent.Elements()) { Execute(child); } }

        public JObject Run()
        {
            try
            {
                foreach (var name in new[] { "inbound", "backend", "outbound" })
                {
                    section = name;
                    ExecuteAll(plan.Element(name));
                }
            }
            catch (ReturnResponse)
            {
                // the response is final: no further section runs
            }
            catch (PolicyError error)
            {
                context.Error = new LastError
                {
                    Source = error.Source_, Reason = error.Reason, Message = error.Message, Section = section,
                    Scope = "", Path = "", PolicyId = "",
                };
                if (section == "inbound" || context.Resp == null || error.Status != 500)
                {
                    var response = new Response { StatusCode = error.Status, StatusReason = error.Reason };
                    response.HeaderValues["Content-Type"] = new[] { "application/json" };
                    if (error.RetryAfter != null) { response.HeaderValues["Retry-After"] = new[] { error.RetryAfter }; }
                    response.ResponseBody = new Body(new JObject(new JProperty("statusCode", error.Status), new JProperty("message", error.Message)).ToString(Newtonsoft.Json.Formatting.None));
                    context.Resp = response;
                }
                section = "on-error";
                try { ExecuteAll(plan.Element("on-error")); }
                catch (PolicyError inner) { expressionErrors.Add(new JObject(new JProperty("expression", "on-error"), new JProperty("error", inner.Message))); }
            }
            var resp = context.Resp;
            return new JObject(
                new JProperty("events", events),
                new JProperty("forwarded", forwarded),
                new JProperty("waits", waits),
                new JProperty("sent", sent),
                new JProperty("cache", cacheLog),
                new JProperty("expressionErrors", expressionErrors),
                new JProperty("lastError", context.Error == null ? null : new JObject(
                    new JProperty("source", context.Error.Source), new JProperty("reason", context.Error.Reason), new JProperty("section", context.Error.Section))),
                new JProperty("response", resp == null ? null : new JObject(
                    new JProperty("status", resp.StatusCode),
                    new JProperty("headers", new JObject(resp.HeaderValues.Select(h => new JProperty(h.Key, string.Join(",", h.Value))))),
                    new JProperty("body", resp.ResponseBody == null ? null : resp.ResponseBody.Peek()))),
                new JProperty("variables", new JObject(context.VariableValues
                    .Where(v => v.Value is string || v.Value is bool)
                    .Select(v => new JProperty(v.Key, v.Value)))));
        }
    }

    /// <summary>Every type and member the compiled expressions reference, checked against APIM's
    /// allow-list of .NET types (allowed-types.txt, from the policy-expressions reference).</summary>
    static class AllowList
    {
        /// <summary>Every type and member seen in the expressions (so a test can tell the scan saw the code).</summary>
        public static readonly SortedSet<string> Referenced = new SortedSet<string>();

        static readonly Dictionary<short, OpCode> Codes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Select(f => (OpCode)f.GetValue(null)).GroupBy(o => o.Value).ToDictionary(g => g.Key, g => g.First());

        // What C# itself emits for lambdas, foreach, array initialisers and catch-all blocks.
        static readonly HashSet<string> CompilerMembers = new HashSet<string> {
            "System.Object::(Constructor)", "System.Object::ToString", "System.Object::Equals", "System.Object::GetHashCode",
            "System.IDisposable::Dispose", "System.Collections.IEnumerator::MoveNext", "System.Collections.IEnumerator::Current",
            "System.Runtime.CompilerServices.RuntimeHelpers::InitializeArray",
            "System.Func::(Constructor)", "System.Func::Invoke", "System.Action::(Constructor)", "System.Action::Invoke",
        };
        static readonly HashSet<string> CompilerTypes = new HashSet<string> { "System.Object", "System.Void", "System.Func", "System.Action" };

        static string Key(Type t)
        {
            while (t.HasElementType) { t = t.GetElementType(); }
            if (t.IsGenericType) { t = t.GetGenericTypeDefinition(); }
            var name = (t.FullName ?? t.Name).Replace('+', '.');
            var tick = name.IndexOf('`');
            return tick < 0 ? name : name.Substring(0, tick) + (name.IndexOf('.', tick) > 0 ? name.Substring(name.IndexOf('.', tick)) : "");
        }

        static bool Generated(Type t)
        {
            for (var x = t; x != null; x = x.DeclaringType) { if (x.Name.StartsWith("<") || x == typeof(Apim.Policies.Expressions)) { return true; } }
            return false;
        }

        public static List<string> Check(Dictionary<string, HashSet<string>> allowed)
        {
            var problems = new SortedSet<string>();
            Func<Type, bool> typeOk = null;
            typeOk = t =>
            {
                while (t.HasElementType) { t = t.GetElementType(); }
                if (t.IsGenericParameter) { return true; }
                if (t.IsGenericType && !t.IsGenericTypeDefinition && !t.GetGenericArguments().All(typeOk)) { return false; }
                if (Generated(t) || t.Namespace == "Apim.Documented") { return true; }
                var key = Key(t);
                if (allowed.ContainsKey(key) || CompilerTypes.Contains(key)) { return true; }
                return t.DeclaringType != null && typeOk(t.DeclaringType);   // nested: List<T>.Enumerator
            };
            Action<Type, string> checkType = (t, where) => { if (!typeOk(t)) { problems.Add("type " + t + " (" + where + ")"); } };
            Action<MemberInfo, string> checkMember = (m, where) =>
            {
                var declaring = m.DeclaringType;
                if (declaring == null || Generated(declaring)) { return; }
                var method = m as MethodBase;
                // Array.Empty<T>() is how the compiler passes an empty params array (ToString(Formatting.None)).
                var paramsArray = method != null && declaring == typeof(Array) && method.Name == "Empty";
                if (method != null && method.IsGenericMethod && !paramsArray) { foreach (var a in ((MethodInfo)method).GetGenericArguments()) { checkType(a, where); } }
                if (declaring.IsGenericType) { foreach (var a in declaring.GetGenericArguments()) { checkType(a, where); } }
                var name = m is ConstructorInfo ? "(Constructor)" : m.Name;
                if (method != null && method.IsSpecialName && (name.StartsWith("get_") || name.StartsWith("set_"))) { name = name.Substring(4); }
                if (declaring.Namespace == "Apim.Documented")
                {
                    if (name == "(Constructor)") { problems.Add("member " + declaring.Name + "::" + name + " (" + where + "): not documented"); }
                    return;
                }
                var key = Key(declaring);
                Referenced.Add(key + "::" + name);
                if (CompilerMembers.Contains(key + "::" + name)) { return; }
                HashSet<string> members;
                if (!allowed.TryGetValue(key, out members))
                {
                    if (declaring.DeclaringType != null && typeOk(declaring)) { return; }   // nested type of an allowed type
                    problems.Add("type " + key + " (" + where + ", member " + name + ")");
                    return;
                }
                if (members.Contains("-" + name) || (!members.Contains("All") && !members.Contains(name))) { problems.Add("member " + key + "::" + name + " (" + where + ")"); }
            };

            var types = new List<Type> { typeof(Apim.Policies.Expressions) };
            types.AddRange(typeof(Apim.Policies.Expressions).GetNestedTypes(BindingFlags.Public | BindingFlags.NonPublic));
            for (var i = 1; i < types.Count; i++) { types.AddRange(types[i].GetNestedTypes(BindingFlags.Public | BindingFlags.NonPublic)); }
            const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;
            foreach (var type in types)
            {
                foreach (var field in type.GetFields(all)) { checkType(field.FieldType, type.Name + "." + field.Name); }
                foreach (var method in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
                {
                    var where = Apim.Policies.ExpressionTable.OriginOf(method.Name);
                    var body = method.GetMethodBody();
                    if (body == null) { continue; }
                    foreach (var local in body.LocalVariables) { checkType(local.LocalType, where); }
                    foreach (var clause in body.ExceptionHandlingClauses)
                    {
                        if (clause.Flags == ExceptionHandlingClauseOptions.Clause) { checkType(clause.CatchType, where); }
                    }
                    var il = body.GetILAsByteArray();
                    for (var pos = 0; pos < il.Length;)
                    {
                        short value = il[pos++];
                        if (value == 0xFE) { value = (short)(0xFE00 | il[pos++]); }
                        var code = Codes[value];
                        int size;
                        switch (code.OperandType)
                        {
                            case OperandType.InlineNone: size = 0; break;
                            case OperandType.ShortInlineBrTarget: case OperandType.ShortInlineI: case OperandType.ShortInlineVar: size = 1; break;
                            case OperandType.InlineVar: size = 2; break;
                            case OperandType.InlineI8: case OperandType.InlineR: size = 8; break;
                            case OperandType.InlineSwitch: size = 4 + 4 * BitConverter.ToInt32(il, pos); break;
                            default: size = 4; break;
                        }
                        if (code.OperandType == OperandType.InlineMethod || code.OperandType == OperandType.InlineField
                            || code.OperandType == OperandType.InlineType || code.OperandType == OperandType.InlineTok)
                        {
                            var token = BitConverter.ToInt32(il, pos);
                            var member = method.Module.ResolveMember(token,
                                method.DeclaringType.IsGenericType ? method.DeclaringType.GetGenericArguments() : null,
                                method.IsGenericMethod ? method.GetGenericArguments() : null);
                            var asType = member as Type;
                            if (asType != null)
                            {
                                // newarr for params arrays is the compiler's (ToString(Formatting.None) makes a JsonConverter[]).
                                if (code != OpCodes.Newarr) { checkType(asType, where); }
                            }
                            else { checkMember(member, where); }
                        }
                        pos += size;
                    }
                }
            }
            return problems.ToList();
        }
    }

    static class Program
    {
        static int Main(string[] args)
        {
            Console.OutputEncoding = new UTF8Encoding(false);
            if (args.Length == 2 && args[0] == "check")
            {
                var allowed = new Dictionary<string, HashSet<string>>();
                foreach (var raw in File.ReadAllLines(args[1]))
                {
                    var line = raw.Trim();
                    if (line.Length == 0 || line.StartsWith("#")) { continue; }
                    var colon = line.IndexOf(':');
                    var type = line.Substring(0, colon).Trim();
                    var lt = type.IndexOf('<');
                    if (lt > 0) { type = type.Substring(0, lt); }
                    allowed[type] = new HashSet<string>(line.Substring(colon + 1).Split(',').Select(m => m.Trim()));
                }
                var violations = new JArray(AllowList.Check(allowed));
                Console.WriteLine(new JObject(new JProperty("violations", violations), new JProperty("referenced", new JArray(AllowList.Referenced))).ToString(Newtonsoft.Json.Formatting.None));
                return 0;
            }
            if (args.Length == 1 && args[0] == "run")
            {
                var input = new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false)).ReadToEnd();
                var plan = XElement.Parse(Apim.Policies.PolicyPlan.Xml);
                var results = new JArray();
                // The host reads scenarios without JSON.NET's date guessing (expressions cannot choose that).
                var reader = new Newtonsoft.Json.JsonTextReader(new StringReader(input)) { DateParseHandling = Newtonsoft.Json.DateParseHandling.None };
                foreach (JObject scenario in JArray.Load(reader)) { results.Add(new Gateway(plan, scenario).Run()); }
                Console.WriteLine(results.ToString(Newtonsoft.Json.Formatting.None));
                return 0;
            }
            Console.Error.WriteLine("usage: gateway.exe run < scenarios.json | gateway.exe check allowed-types.txt");
            return 2;
        }
    }
}
