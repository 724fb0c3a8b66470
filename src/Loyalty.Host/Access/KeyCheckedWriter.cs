using Grpc.Core;
using Loyalty.Host.Grpc;

namespace Loyalty.Host.Access;

/// <summary>
/// A server stream's writer that checks, before each message, that the key which opened the stream
/// still works; once it is revoked, expires or is removed, the stream ends with UNAUTHENTICATED
/// and nothing more is sent. The check is a lookup in the node's key table, which follows the
/// database within a refresh.
/// </summary>
/// <typeparam name="T">The message type.</typeparam>
internal sealed class KeyCheckedWriter<T>(IServerStreamWriter<T> inner, KeyRegistry keys, Caller caller, ClientFaults faults, string method) : IServerStreamWriter<T>
{
    /// <inheritdoc />
    public WriteOptions? WriteOptions
    {
        get => inner.WriteOptions;
        set => inner.WriteOptions = value;
    }

    /// <inheritdoc />
    public Task WriteAsync(T message)
    {
        keys.ThrowIfNoLongerUsable(caller, faults, method);
        return inner.WriteAsync(message);
    }

    /// <inheritdoc />
    public Task WriteAsync(T message, CancellationToken cancellationToken)
    {
        keys.ThrowIfNoLongerUsable(caller, faults, method);
        return inner.WriteAsync(message, cancellationToken);
    }
}
