using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Calls any method of the API by its descriptor, for tests that go over every method.</summary>
public static class RawCalls
{
    /// <summary>Every method of every service of the API.</summary>
    public static IEnumerable<MethodDescriptor> AllMethods() =>
        V1.LoyaltyReflection.Descriptor.Services.SelectMany(s => s.Methods);

    /// <summary>The method's full name as the gateway sees it, "/loyalty.v1.Members/Enroll".</summary>
    public static string FullName(this MethodDescriptor method) => $"/{method.Service.FullName}/{method.Name}";

    /// <summary>An empty request of the method, with program_id (and store_id) set where the message has them.</summary>
    public static IMessage Request(MethodDescriptor method, string program, string store = "store-1")
    {
        IMessage request = method.InputType.Parser.ParseFrom(ByteString.Empty);
        method.InputType.FindFieldByName("program_id")?.Accessor.SetValue(request, program);
        method.InputType.FindFieldByName("store_id")?.Accessor.SetValue(request, store);
        return request;
    }

    /// <summary>Sends a unary request; the status it got (OK when it answered).</summary>
    public static async Task<StatusCode> UnaryStatusAsync(CallInvoker invoker, MethodDescriptor method, IMessage request)
    {
        var call = new Method<IMessage, IMessage>(MethodType.Unary, method.Service.FullName, method.Name,
            Marshallers.Create<IMessage>(m => m.ToByteArray(), method.InputType.Parser.ParseFrom),
            Marshallers.Create<IMessage>(m => m.ToByteArray(), method.OutputType.Parser.ParseFrom));
        try
        {
            await invoker.AsyncUnaryCall(call, null, new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30)), request);
            return StatusCode.OK;
        }
        catch (RpcException e)
        {
            return e.StatusCode;
        }
    }

    /// <summary>Opens a duplex stream of raw bytes, sends nothing more, and returns the status the stream ended with.</summary>
    public static async Task<StatusCode> StreamStatusAsync(CallInvoker invoker, string service, string name, byte[]? message = null)
    {
        var call = new Method<byte[], byte[]>(MethodType.DuplexStreaming, service, name, Marshallers.Create(b => b, b => b), Marshallers.Create(b => b, b => b));
        using AsyncDuplexStreamingCall<byte[], byte[]> stream = invoker.AsyncDuplexStreamingCall(call, null, new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30)));
        try
        {
            if (message is not null)
            {
                await stream.RequestStream.WriteAsync(message);
            }

            await stream.RequestStream.CompleteAsync();
        }
        catch (Exception e) when (e is RpcException or InvalidOperationException)
        {
            // The server may end the call before the request is written; its status is read below.
        }

        try
        {
            while (await stream.ResponseStream.MoveNext(CancellationToken.None))
            {
            }

            return StatusCode.OK;
        }
        catch (RpcException e)
        {
            return e.StatusCode;
        }
    }
}
