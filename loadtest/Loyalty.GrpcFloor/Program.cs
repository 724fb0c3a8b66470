using Loyalty.GrpcFloor;

// The floor the engine's gRPC front door and its load tester set together: a server with the
// engine's wire contract that answers every purchase at once, with no grain and no ledger. It
// reads the engine's own appsettings.json (Kestrel's endpoints and limits, the gateway's in-flight
// limit; the rest is ignored) and takes the same command line, so the load tester starts it with
// `--spawn grpc-floor` as it starts the engine: tester, gRPC, HTTP/2 and Kestrel are measured as
// they are under the engine, and the rest of the engine's latency is its own. `--Floor:Hops=N`
// (0..8, default 1) hands each answer through the thread pool N times before it is written.
WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = args,
    // The engine's appsettings.json is copied next to the binaries (see the project file).
    ContentRootPath = AppContext.BaseDirectory,
});
FloorSettings settings = FloorSettings.From(builder.Configuration);
builder.Services.AddSingleton(settings);
builder.Services.AddGrpc();
WebApplication app = builder.Build();
app.MapGrpcService<FloorPurchases>();
app.MapGrpcService<FloorSetUp.Programs>();
app.MapGrpcService<FloorSetUp.Keys>();
app.MapGrpcService<FloorSetUp.Members>();
// One line for the log, which says what answered (the load tester keeps it beside the run).
Console.WriteLine($"gRPC floor: answers after {settings.Hops} hops through the thread pool, at most {settings.InFlightMax} in flight per stream, " +
    $"{settings.StreamsPerConnectionMax} streams per connection");
await app.RunAsync();
