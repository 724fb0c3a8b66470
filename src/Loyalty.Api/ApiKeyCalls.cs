using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Loyalty.Api;

/// <summary>Calls that carry an API key, for clients of the engine.</summary>
public static class ApiKeyCalls
{
    /// <summary>The metadata trailer of a RESOURCE_EXHAUSTED answer that says when to try again, in milliseconds.</summary>
    public const string RetryAfterTrailer = "retry-after-ms";

    /// <summary>A call invoker over <paramref name="channel"/> that sends <c>authorization: Bearer <paramref name="key"/></c> on every call.</summary>
    public static CallInvoker WithKey(this ChannelBase channel, string key)
    {
        string value = "Bearer " + key.Trim();
        return channel.CreateCallInvoker().Intercept(metadata =>
        {
            metadata.Add("authorization", value);
            return metadata;
        });
    }

    /// <summary>How long a RESOURCE_EXHAUSTED answer asks the client to wait, or null when it does not say.</summary>
    public static TimeSpan? RetryAfter(this RpcException exception) =>
        exception.Trailers.GetValue(RetryAfterTrailer) is { } value && long.TryParse(value, out long milliseconds) && milliseconds >= 0
            ? TimeSpan.FromMilliseconds(milliseconds)
            : null;
}
