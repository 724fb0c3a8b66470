using Loyalty.Api;
using Grpc.Core;
using Grpc.Net.Client;
using Loyalty.Grains;
using Loyalty.Host;
using Microsoft.Extensions.DependencyInjection;
using Loyalty.Storage;
using Microsoft.AspNetCore.Builder;
using V1 = Loyalty.Api.V1;

namespace Loyalty.Tests.Infrastructure;

/// <summary>
/// The real engine (silo plus gRPC gateway, as Program.cs builds it) inside the test process, on
/// a free loopback port, reached over a real HTTP/2 gRPC channel.
/// </summary>
public sealed class InProcessEngine : IAsyncDisposable
{
    private readonly WebApplication _app;

    private InProcessEngine(WebApplication app, GrpcChannel channel, StorageOptions storage)
    {
        _app = app;
        Channel = channel;
        Storage = storage;
        Invoker = channel.WithKey(TestKeys.Operator);
        Programs = new V1.ProgramAdmin.ProgramAdminClient(Invoker);
        Members = new V1.Members.MembersClient(Invoker);
        Purchases = new V1.Purchases.PurchasesClient(Invoker);
    }

    public GrpcChannel Channel { get; }

    /// <summary>The engine's services, to read the configuration it settled on.</summary>
    public IServiceProvider Services => _app.Services;

    /// <summary>Calls over <see cref="Channel"/> with the operator key.</summary>
    public CallInvoker Invoker { get; }

    /// <summary>The engine's gRPC address, e.g. http://127.0.0.1:41234.</summary>
    public string Address => "http://" + Channel.Target;

    public StorageOptions Storage { get; }

    /// <summary>The engine's HTTP/1.1 (JSON) address.</summary>
    public required string HttpAddress { get; init; }

    public V1.ProgramAdmin.ProgramAdminClient Programs { get; }

    public V1.Members.MembersClient Members { get; }

    public V1.Purchases.PurchasesClient Purchases { get; }

    /// <summary>Starts the engine; with <paramref name="rulesClock"/>, the loyalty rules and the due schedule run on that clock.</summary>
    public static async Task<InProcessEngine> StartAsync(StorageOptions storage, TimeProvider? rulesClock = null, params string[] extraArgs)
    {
        // A port free a moment ago may be taken by then (an outgoing connection's ephemeral port,
        // another test's engine): bind again on new ports, a bounded number of times.
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return await StartOnceAsync(storage, rulesClock, extraArgs);
            }
            catch (IOException e) when (attempt < BindAttemptsMax && e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
            {
            }
        }
    }

    private const int BindAttemptsMax = 5;

    private static async Task<InProcessEngine> StartOnceAsync(StorageOptions storage, TimeProvider? rulesClock, string[] extraArgs)
    {
        int port = Ports.Free(), httpPort = Ports.Free();
        WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = [.. EngineArgs.For(storage, port, httpPort), .. extraArgs],
            ContentRootPath = AppContext.BaseDirectory,
        });
        if (rulesClock is not null)
        {
            // Registered before the engine, whose own registration only fills a gap.
            builder.Services.AddSingleton(new EngineClock(rulesClock));
        }

        builder.AddLoyaltyEngine();
        WebApplication app = builder.Build();
        app.MapLoyaltyGateway();
        try
        {
            await app.StartAsync();
        }
        catch (IOException)
        {
            // The services that did start (the silo, the ledger writer) stop before the next attempt opens the database again.
            await app.StopAsync();
            await app.DisposeAsync();
            throw;
        }

        return new InProcessEngine(app, GrpcChannel.ForAddress($"http://127.0.0.1:{port}"), storage) { HttpAddress = $"http://127.0.0.1:{httpPort}" };
    }

    /// <summary>Starts stopping the engine, as SIGTERM would; the task ends when it has stopped.</summary>
    public Task StopAsync() => _app.StopAsync();

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
