// The `context` of an Azure API Management policy expression, declared with ONLY the members that
// Microsoft documents ("API Management policy expressions", section "Context variable":
// https://learn.microsoft.com/azure/api-management/api-management-policy-expressions). A policy
// expression that uses anything else fails to compile here, as it would fail to save (or to run)
// in APIM. Members are read-only, as documented. The implementations behind these interfaces live
// in Gateway.cs (the emulator), which expressions cannot name: the allow-list check (Gateway.cs,
// AllowList) rejects any reference outside this namespace and the documented .NET types.
//
// Left out on purpose (documented, unused by policy/*.xml): Encrypt/Decrypt/VerifyNoRevocation
// extension methods. Add them here, from the reference, when a policy needs them.
using System;
using System.Collections.Generic;
using System.Linq;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Newtonsoft.Json.Linq;

namespace Apim.Documented
{
    public interface IProxyRequestContext
    {
        IApi Api { get; }
        IDeployment Deployment { get; }
        TimeSpan Elapsed { get; }
        ILastError LastError { get; }
        IOperation Operation { get; }
        IProduct Product { get; }
        IRequest Request { get; }
        Guid RequestId { get; }
        IResponse Response { get; }
        ISubscription Subscription { get; }
        DateTime Timestamp { get; }
        bool Tracing { get; }
        IUser User { get; }
        IReadOnlyDictionary<string, object> Variables { get; }
        void Trace(string message);
    }

    public interface IApi
    {
        string Id { get; }
        bool IsCurrentRevision { get; }
        string Name { get; }
        string Path { get; }
        IEnumerable<string> Protocols { get; }
        string Revision { get; }
        IUrl ServiceUrl { get; }
        ISubscriptionKeyParameterNames SubscriptionKeyParameterNames { get; }
        string Version { get; }
    }

    public interface IDeployment
    {
        string GatewayId { get; }
        string Region { get; }
        string ServiceName { get; }
        IReadOnlyDictionary<string, X509Certificate2> Certificates { get; }
    }

    public interface ILastError
    {
        string Source { get; }
        string Reason { get; }
        string Message { get; }
        string Scope { get; }
        string Section { get; }
        string Path { get; }
        string PolicyId { get; }
    }

    public interface IOperation
    {
        string Id { get; }
        string Method { get; }
        string Name { get; }
        string UrlTemplate { get; }
    }

    public enum ProductState { NotPublished, Published }

    public interface IProduct
    {
        IEnumerable<IApi> Apis { get; }
        bool ApprovalRequired { get; }
        IEnumerable<IGroup> Groups { get; }
        string Id { get; }
        string Name { get; }
        ProductState State { get; }
        int? SubscriptionLimit { get; }
        bool SubscriptionRequired { get; }
    }

    public interface IRequest
    {
        IMessageBody Body { get; }
        X509Certificate2 Certificate { get; }
        IReadOnlyDictionary<string, string[]> Headers { get; }
        string IpAddress { get; }
        IReadOnlyDictionary<string, string> MatchedParameters { get; }
        string Method { get; }
        IUrl OriginalUrl { get; }
        IUrl Url { get; }
        IPrivateEndpointConnection PrivateEndpointConnection { get; }
    }

    public interface IResponse
    {
        IMessageBody Body { get; }
        IReadOnlyDictionary<string, string[]> Headers { get; }
        int StatusCode { get; }
        string StatusReason { get; }
    }

    public interface ISubscription
    {
        DateTime CreatedDate { get; }
        DateTime? EndDate { get; }
        string Id { get; }
        string Key { get; }
        string Name { get; }
        string PrimaryKey { get; }
        string SecondaryKey { get; }
        DateTime? StartDate { get; }
    }

    public interface IUser
    {
        string Email { get; }
        string FirstName { get; }
        IEnumerable<IGroup> Groups { get; }
        string Id { get; }
        IEnumerable<IUserIdentity> Identities { get; }
        string LastName { get; }
        string Note { get; }
        DateTime RegistrationDate { get; }
    }

    public interface IGroup
    {
        string Id { get; }
        string Name { get; }
    }

    public interface IUserIdentity
    {
        string Id { get; }
        string Provider { get; }
    }

    public interface ISubscriptionKeyParameterNames
    {
        string Header { get; }
        string Query { get; }
    }

    public interface IPrivateEndpointConnection
    {
        string Name { get; }
        string GroupId { get; }
        string MemberName { get; }
    }

    public interface IUrl
    {
        string Host { get; }
        string Path { get; }
        int Port { get; }
        IReadOnlyDictionary<string, string[]> Query { get; }
        string QueryString { get; }
        string Scheme { get; }
    }

    /// <summary>As&lt;T&gt;: T is string, byte[], JObject, JToken, JArray, XNode, XElement or XDocument.
    /// Without preserveContent the body is consumed (later reads and the forwarded message get nothing).</summary>
    public interface IMessageBody
    {
        T As<T>(bool preserveContent = false);
    }

    public sealed class BasicAuthCredentials
    {
        internal BasicAuthCredentials(string userId, string password) { UserId = userId; Password = password; }
        public string Password { get; private set; }
        public string UserId { get; private set; }
    }

    public sealed class Jwt
    {
        internal Jwt(IReadOnlyDictionary<string, string[]> claims)
        {
            Claims = claims;
            string[] values;
            Audiences = claims.TryGetValue("aud", out values) ? values : new string[0];
            Issuer = claims.TryGetValue("iss", out values) ? values[0] : null;
            Subject = claims.TryGetValue("sub", out values) ? values[0] : null;
            Id = claims.TryGetValue("jti", out values) ? values[0] : null;
        }
        public string Algorithm { get; private set; }
        public IEnumerable<string> Audiences { get; private set; }
        public IReadOnlyDictionary<string, string[]> Claims { get; private set; }
        public DateTime? ExpirationTime { get; private set; }
        public string Id { get; private set; }
        public string Issuer { get; private set; }
        public DateTime? IssuedAt { get; private set; }
        public DateTime? NotBefore { get; private set; }
        public string Subject { get; private set; }
        public string Type { get; private set; }
    }

    /// <summary>The documented helper methods: GetValueOrDefault on headers, query parameters, JWT
    /// claims (comma-separated values) and variables (cast to T), AsBasic/TryParseBasic, AsJwt/TryParseJwt.</summary>
    public static class DocumentedExtensions
    {
        public static string GetValueOrDefault(this IReadOnlyDictionary<string, string[]> values, string name, string defaultValue)
        {
            string[] found;
            return values.TryGetValue(name, out found) && found != null ? string.Join(",", found) : defaultValue;
        }

        public static T GetValueOrDefault<T>(this IReadOnlyDictionary<string, object> variables, string variableName, T defaultValue)
        {
            object value;
            if (!variables.TryGetValue(variableName, out value)) { return defaultValue; }
            return (T)value;   // throws when the type does not match, as documented
        }

        public static BasicAuthCredentials AsBasic(this string input)
        {
            BasicAuthCredentials result;
            return TryParseBasic(input, out result) ? result : null;
        }

        public static bool TryParseBasic(this string input, out BasicAuthCredentials result)
        {
            result = null;
            if (input == null || !input.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase)) { return false; }
            try
            {
                var text = Encoding.UTF8.GetString(Convert.FromBase64String(input.Substring(6).Trim()));
                var colon = text.IndexOf(':');
                if (colon < 0) { return false; }
                result = new BasicAuthCredentials(text.Substring(0, colon), text.Substring(colon + 1));
                return true;
            }
            catch (FormatException) { return false; }
        }

        public static Jwt AsJwt(this string input)
        {
            Jwt result;
            return TryParseJwt(input, out result) ? result : null;
        }

        /// <summary>Reads the claims of a compact JWT (no signature check: validate-jwt does that).</summary>
        public static bool TryParseJwt(this string input, out Jwt result)
        {
            result = null;
            if (input == null) { return false; }
            var token = input.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? input.Substring(7).Trim() : input.Trim();
            var parts = token.Split('.');
            if (parts.Length != 3) { return false; }
            try
            {
                var payload = parts[1].Replace('-', '+').Replace('_', '/');
                payload = payload.PadRight(payload.Length + (4 - payload.Length % 4) % 4, '=');
                var claims = JObject.Parse(Encoding.UTF8.GetString(Convert.FromBase64String(payload)));
                var map = new Dictionary<string, string[]>(StringComparer.Ordinal);
                foreach (var claim in claims.Properties())
                {
                    var array = claim.Value as JArray;
                    map[claim.Name] = array != null ? array.Select(v => v.ToString()).ToArray() : new[] { claim.Value.ToString() };
                }
                result = new Jwt(map);
                return true;
            }
            catch (Exception) { return false; }
        }
    }
}
