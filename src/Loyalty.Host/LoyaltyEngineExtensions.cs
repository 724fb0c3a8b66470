using Loyalty.Grains;
using Loyalty.Host.Grpc;
using Loyalty.Storage;
using Orleans.Configuration;

namespace Loyalty.Host;

/// <summary>Builds the engine: an Orleans silo with the gRPC gateway co-hosted.</summary>
public static class LoyaltyEngineExtensions
{
    /// <summary>Adds the silo, its storage and the gRPC services, all from configuration.</summary>
    public static WebApplicationBuilder AddLoyaltyEngine(this WebApplicationBuilder builder)
    {
        IConfiguration config = builder.Configuration;
        StorageOptions storage = config.ReadStorageOptions();
        SiloOptions silo = config.GetSection(SiloOptions.SectionName).Get<SiloOptions>() ?? new SiloOptions();

        builder.Services.Configure<GatewayOptions>(config.GetSection(GatewayOptions.SectionName));
        builder.Services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = GatewayOptions.MessageBytesMax;
            o.EnableDetailedErrors = false;
            o.Interceptors.Add<FaultInterceptor>();
        }).AddServiceOptions<PurchasesService>(o => o.MaxReceiveMessageSize = GatewayOptions.PurchaseMessageBytesMax);

        // Server reflection lets grpcurl and similar tools call the API without the .proto file.
        builder.Services.AddGrpcReflection();
        builder.UseOrleans(siloBuilder =>
        {
            siloBuilder.UseLocalhostClustering(silo.SiloPort, silo.GatewayPort, serviceId: storage.ServiceId, clusterId: silo.ClusterId);
            siloBuilder.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = silo.ClusterId;
                o.ServiceId = storage.ServiceId;
            });
            siloBuilder.Configure<GrainCollectionOptions>(o =>
            {
                o.CollectionAge = TimeSpan.FromSeconds(Math.Max(silo.IdleDeactivateAfterSeconds, 10));
                // Idle grains are looked for at a quarter of the age (Orleans needs the quantum below the age).
                o.CollectionQuantum = o.CollectionAge / 4;
            });
            siloBuilder.AddLoyaltyGrains(
                storage,
                members => config.GetSection(MemberOptions.SectionName).Bind(members),
                ledger => config.GetSection(LedgerCommitOptions.SectionName).Bind(ledger),
                schedule => config.GetSection(ScheduleOptions.SectionName).Bind(schedule));
        });
        return builder;
    }

    /// <summary>Maps the gRPC services.</summary>
    public static WebApplication MapLoyaltyGateway(this WebApplication app)
    {
        app.MapGrpcService<ProgramAdminService>();
        app.MapGrpcService<MembersService>();
        app.MapGrpcService<PurchasesService>();
        app.MapGrpcService<RedemptionsService>();
        app.MapGrpcReflectionService();
        return app;
    }
}
