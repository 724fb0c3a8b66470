using Loyalty.GrpcFloor;
using Microsoft.AspNetCore.Server.Kestrel.Core;

// The floor the engine's gRPC front door and its load tester set together: a server with the
// engine's wire contract that answers every purchase at once, with no grain and no ledger. The
// load tester starts it with `--spawn grpc-floor` on the engine's command line (Kestrel's
// endpoint settings; the others are ignored), so that tester, gRPC, HTTP/2 and Kestrel are
// measured as they are under the engine, and the rest of the engine's latency is its own.
// `--Floor:Hops=N` (0..8) hands each answer through the thread pool N times before it is written,
// as the engine's grain call and commit hand a purchase from thread to thread.
WebApplicationBuilder builder = WebApplication.CreateBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.WebHost.ConfigureKestrel(k => k.ConfigureEndpointDefaults(l => l.Protocols = HttpProtocols.Http2));
builder.Services.AddSingleton(FloorSettings.From(builder.Configuration));
builder.Services.AddGrpc();
WebApplication app = builder.Build();
app.MapGrpcService<FloorPurchases>();
app.MapGrpcService<FloorSetUp.Programs>();
app.MapGrpcService<FloorSetUp.Keys>();
app.MapGrpcService<FloorSetUp.Members>();
await app.RunAsync();
