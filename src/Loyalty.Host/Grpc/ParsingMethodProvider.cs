using System.Buffers;
using System.Reflection;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.AspNetCore.Server.Model;
using Grpc.Core;
using Microsoft.AspNetCore.Routing;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Host.Grpc;

/// <summary>
/// Binds every gRPC service like grpc-dotnet's own binder, but with request marshallers that turn a
/// message that does not parse into INVALID_ARGUMENT. Without it grpc-dotnet answers such a message
/// with UNKNOWN on unary calls (it is read before any interceptor runs) and the stream handlers see
/// an exception a client would take for an engine fault worth retrying. The malformed message is
/// counted in <see cref="ClientFaults"/>, not logged with a stack trace.
/// </summary>
/// <typeparam name="TService">The service class.</typeparam>
public sealed class ParsingMethodProvider<TService>(ClientFaults faults) : IServiceMethodProvider<TService>
    where TService : class
{
    /// <inheritdoc />
    public void OnServiceMethodDiscovery(ServiceMethodProviderContext<TService> context)
    {
        MethodInfo? bind = FindBindMethod();
        if (bind is null)
        {
            return;
        }

        // The generated BindService(binder, service) names each method with its marshallers; a null
        // service is allowed and only the method descriptions are used.
        bind.Invoke(null, [new Binder(context, faults), null]);
    }

    /// <summary>The generated static BindService method named by the service base class's attribute.</summary>
    private static MethodInfo? FindBindMethod()
    {
        for (Type? type = typeof(TService); type is not null; type = type.BaseType)
        {
            if (type.GetCustomAttribute<BindServiceMethodAttribute>(inherit: false) is { } attribute)
            {
                return attribute.BindType.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)
                    .FirstOrDefault(m => m.Name == attribute.BindMethodName && m.GetParameters().Length == 2
                        && m.GetParameters()[0].ParameterType == typeof(ServiceBinderBase));
            }
        }

        return null;
    }

    /// <summary>Receives the generated method descriptions and adds each with a guarded request marshaller.</summary>
    private sealed class Binder(ServiceMethodProviderContext<TService> context, ClientFaults faults) : ServiceBinderBase
    {
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler) =>
            context.AddUnaryMethod(Guarded(method), Metadata(method.Name), Invoker<UnaryServerMethod<TService, TRequest, TResponse>>(method.Name));

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddDuplexStreamingMethod(Guarded(method), Metadata(method.Name), Invoker<DuplexStreamingServerMethod<TService, TRequest, TResponse>>(method.Name));

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddServerStreamingMethod(Guarded(method), Metadata(method.Name), Invoker<ServerStreamingServerMethod<TService, TRequest, TResponse>>(method.Name));

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler) =>
            context.AddClientStreamingMethod(Guarded(method), Metadata(method.Name), Invoker<ClientStreamingServerMethod<TService, TRequest, TResponse>>(method.Name));

        private Method<TRequest, TResponse> Guarded<TRequest, TResponse>(Method<TRequest, TResponse> method)
            where TRequest : class
            where TResponse : class
        {
            Marshaller<TRequest> inner = method.RequestMarshaller;
            string name = method.FullName;
            int bytesMax = GatewayOptions.MessageBytesMaxOf(name);
            MessageDescriptor? descriptor = typeof(TRequest).GetProperty("Descriptor", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) as MessageDescriptor;
            // Fields this API does not know are dropped, not kept as objects of their own.
            MessageParser? parser = (typeof(TRequest).GetProperty("Parser", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) as MessageParser)?.WithDiscardUnknownFields(true);
            // A batch of more purchases than allowed is parsed only as far as its first purchase
            // too many: enough for the stream to refuse it, whatever the number that follows.
            FieldDescriptor? cut = descriptor == V1.PurchaseBatch.Descriptor ? V1.PurchaseBatch.Descriptor.FindFieldByNumber(V1.PurchaseBatch.PurchasesFieldNumber) : null;
            var guarded = new Marshaller<TRequest>(inner.ContextualSerializer, deserialization =>
            {
                if (deserialization.PayloadLength > bytesMax)
                {
                    // Below the service's limit, which grpc-dotnet enforces, but above what this
                    // method's message can need: refused before it is parsed into objects.
                    string refusal = $"the message is {deserialization.PayloadLength} bytes; {name} takes at most {bytesMax}";
                    faults.Record(ClientFaultKind.TooLarge, name, refusal);
                    throw new RpcException(new Status(StatusCode.ResourceExhausted, refusal));
                }

                long? cutAt = null;
                if (descriptor is not null)
                {
                    ReadOnlySequence<byte> payload = deserialization.PayloadAsReadOnlySequence();
                    long messagesMax = MessageShape.MessagesMaxOf(payload.Length);
                    long messages = MessageShape.CountMessages(payload, descriptor, messagesMax, cut, Limits.IngestBatchPurchasesMax, out cutAt, out bool readable);
                    if (!readable && messages <= messagesMax)
                    {
                        // Not protobuf, or protobuf no encoder of this API writes (groups, tags or
                        // lengths in more bytes than they need): the parser might read it past what was counted.
                        string refusal = $"the message is not a valid {typeof(TRequest).Name}: its bytes are not protobuf as this API's messages are written";
                        faults.Record(ClientFaultKind.Malformed, name, refusal);
                        throw new RpcException(new Status(StatusCode.InvalidArgument, refusal));
                    }

                    if (messages > messagesMax)
                    {
                        string refusal = $"the message of {payload.Length} bytes holds more than {messagesMax} embedded messages (at most one per " +
                            $"{MessageShape.BytesPerMessageMin} bytes): a message made of empty parts is refused before it is parsed";
                        faults.Record(ClientFaultKind.TooLarge, name, refusal);
                        throw new RpcException(new Status(StatusCode.ResourceExhausted, refusal));
                    }
                }

                try
                {
                    ReadOnlySequence<byte> payload = deserialization.PayloadAsReadOnlySequence();
                    return parser is not null
                        ? (TRequest)parser.ParseFrom(cutAt is { } at ? payload.Slice(0, at) : payload)
                        : inner.ContextualDeserializer(deserialization);
                }
                catch (Exception e) when (e is not RpcException)
                {
                    faults.Record(ClientFaultKind.Malformed, name, e.Message);
                    throw new RpcException(new Status(StatusCode.InvalidArgument, $"the message is not a valid {typeof(TRequest).Name}: {Bounded.Echo(e.Message)}"));
                }
            });
            return new Method<TRequest, TResponse>(method.Type, method.ServiceName, method.Name, guarded, method.ResponseMarshaller);
        }

        /// <summary>What grpc-dotnet's binder gives each endpoint: the service's and the method's attributes, and POST only.</summary>
        private static List<object> Metadata(string methodName)
        {
            var metadata = new List<object>(typeof(TService).GetCustomAttributes(inherit: true));
            if (typeof(TService).GetMethod(methodName, BindingFlags.Public | BindingFlags.Instance) is { } implementation)
            {
                metadata.AddRange(implementation.GetCustomAttributes(inherit: true));
            }

            metadata.Add(new HttpMethodMetadata(["POST"], acceptCorsPreflight: true));
            return metadata;
        }

        /// <summary>An open delegate to the service's override (or the base's UNIMPLEMENTED) of the method.</summary>
        private static TDelegate Invoker<TDelegate>(string methodName)
            where TDelegate : Delegate
        {
            Type[] parameters = [.. typeof(TDelegate).GetMethod("Invoke")!.GetParameters().Skip(1).Select(p => p.ParameterType)];
            MethodInfo target = typeof(TService).GetMethod(methodName, BindingFlags.Public | BindingFlags.Instance, parameters)
                ?? throw new InvalidOperationException($"{typeof(TService).Name} has no method {methodName}.");
            return (TDelegate)Delegate.CreateDelegate(typeof(TDelegate), target);
        }
    }
}
