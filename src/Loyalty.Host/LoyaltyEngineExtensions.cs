using Loyalty.Grains;
using Loyalty.Host.Access;
using Loyalty.Host.Events;
using Loyalty.Host.Webhooks;
using Loyalty.Host.Grpc;
using Loyalty.Host.Reports;
using Loyalty.Storage;
using Grpc.AspNetCore.Server.Model;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using System.Net;
using Orleans.Configuration;

namespace Loyalty.Host;

/// <summary>Builds the engine: an Orleans silo with the gRPC gateway co-hosted.</summary>
public static class LoyaltyEngineExtensions
{
    /// <summary>How long the gateway and the silo may take to stop after the drain, before the host gives up on them.</summary>
    private static readonly TimeSpan SiloStopMax = TimeSpan.FromSeconds(60);

    /// <summary>Adds the silo, its storage and the gRPC services, all from configuration.</summary>
    public static WebApplicationBuilder AddLoyaltyEngine(this WebApplicationBuilder builder)
    {
        IConfiguration config = builder.Configuration;
        builder.Services.Configure<GatewayOptions>(config.GetSection(GatewayOptions.SectionName));
        builder.Services.Configure<DashboardSettings>(config.GetSection(DashboardSettings.SectionName));
        GatewayOptions gateway = config.GetSection(GatewayOptions.SectionName).Get<GatewayOptions>() ?? new GatewayOptions();
        builder.Services.Configure<HostOptions>(o =>
            // The drain, the streams' end, the redeliveries by hand, then the gateway's and the silo's stop (ledger flush, grains handed over).
            o.ShutdownTimeout = TimeSpan.FromSeconds(Math.Max(0, gateway.DrainDelaySeconds)) + DrainDelay.StreamsEndMax + WebhookDispatcher.ManualEndMax + SiloStopMax);
        builder.AddLoyaltyAccess();
        builder.AddLoyaltyTelemetry();
        builder.Services.AddLoyaltyFrontDoor();
        builder.Services.AddLoyaltyEventsOut(config);
        builder.Services.AddLoyaltyReports(config);
        builder.UseOrleans(siloBuilder => siloBuilder.AddLoyaltySilo(config));
        return builder;
    }

    /// <summary>
    /// The gRPC services with their interceptors, HTTP/JSON, OpenAPI, health and reflection, bound
    /// with marshallers that refuse a message that does not parse.
    /// </summary>
    private static void AddLoyaltyFrontDoor(this IServiceCollection services)
    {
        services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = GatewayOptions.MessageBytesMax;
            o.EnableDetailedErrors = false;
            // Outermost first: nothing reaches a service, or the fault handler, without a key.
            o.Interceptors.Add<AccessInterceptor>();
            o.Interceptors.Add<FaultInterceptor>();
        }).AddServiceOptions<PurchasesService>(o => o.MaxReceiveMessageSize = GatewayOptions.PurchaseMessageBytesMax)
            // Every unary call as HTTP/JSON too (the google.api.http routes of the .proto), through the same interceptors.
            .AddJsonTranscoding();
        services.AddLoyaltyOpenApi();
        services.AddLoyaltyHealth();

        // Every service is bound with request marshallers that refuse a message that does not
        // parse as INVALID_ARGUMENT; grpc-dotnet's own binder would answer UNKNOWN.
        foreach (ServiceDescriptor binder in services.Where(d => d.ServiceType == typeof(IServiceMethodProvider<>)
            && d.ImplementationType?.Name == "BinderServiceMethodProvider`1").ToList())
        {
            services.Remove(binder);
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton(typeof(IServiceMethodProvider<>), typeof(ParsingMethodProvider<>)));

        // Server reflection lets grpcurl and similar tools call the API without the .proto file.
        services.AddGrpcReflection();
    }

    /// <summary>Programme reports' limits: how many of one program a node computes at once.</summary>
    private static void AddLoyaltyReports(this IServiceCollection services, IConfiguration config)
    {
        services.AddOptions<ReportOptions>().Bind(config.GetSection(ReportOptions.SectionName))
            .Validate(o => o.Problem() is null, "Reports: a value is out of range (see the README)").ValidateOnStart();
        services.AddSingleton<ReportGate>();
    }

    /// <summary>The event feed and the webhook dispatcher, which starts and stops with the silo.</summary>
    private static void AddLoyaltyEventsOut(this IServiceCollection services, IConfiguration config)
    {
        services.AddOptions<EventOptions>().Bind(config.GetSection(EventOptions.SectionName))
            .Validate(o => o.Problem() is null, "Events: a value is out of range (see the README)").ValidateOnStart();
        services.AddSingleton<EventFeed>();
        services.AddOptions<WebhookOptions>().Bind(config.GetSection(WebhookOptions.SectionName))
            .Validate(o => o.Problem() is null, "Webhooks: a value is out of range (see the README)").ValidateOnStart();
        services.AddSingleton<WebhookSender>();
        services.AddSingleton<WebhookDispatcher>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(s => s.GetRequiredService<WebhookDispatcher>());
    }

    /// <summary>The silo: its membership, cluster identity, idle collection, directory cache and the engine's grains.</summary>
    private static void AddLoyaltySilo(this ISiloBuilder siloBuilder, IConfiguration config)
    {
        StorageOptions storage = config.ReadStorageOptions();
        SiloOptions silo = config.GetSection(SiloOptions.SectionName).Get<SiloOptions>() ?? new SiloOptions();
        siloBuilder.UseLoyaltyMembership(silo, storage);
        // Grain calls carry the caller's trace, so a purchase is one trace from gateway to grain.
        // Only when traces are exported: the propagation is a grain-call filter on each side,
        // and filters take Orleans off its direct call path (two more state machines, an
        // invoker and a continuation per call: about 0.9 KB per purchase in an allocation trace).
        if (Telemetry.Exports(config))
        {
            siloBuilder.AddActivityPropagation();
        }

        siloBuilder.AddLoyaltyDashboard(config.GetSection(DashboardSettings.SectionName).Get<DashboardSettings>() ?? new DashboardSettings());
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
        siloBuilder.ConfigureDirectoryCache(silo);
        siloBuilder.AddLoyaltyGrains(
            storage,
            members => config.GetSection(MemberOptions.SectionName).Bind(members),
            ledger => config.GetSection(LedgerCommitOptions.SectionName).Bind(ledger),
            schedule => config.GetSection(ScheduleOptions.SectionName).Bind(schedule));
    }

    /// <summary>
    /// One engine reads its directory in process: a cache of it would only hold every member's
    /// address twice (see <see cref="SiloOptions.DirectoryCacheSize"/>).
    /// </summary>
    private static void ConfigureDirectoryCache(this ISiloBuilder siloBuilder, SiloOptions silo)
    {
        int cacheEntries = silo.DirectoryCacheEntries(new GrainDirectoryOptions().CacheSize);
        siloBuilder.Configure<GrainDirectoryOptions>(o =>
        {
            if (cacheEntries == 0)
            {
                // "None" turns the directory's cache off; the size is still read for grains
                // in an external directory, and Orleans refuses one below the minimum.
                o.CachingStrategy = GrainDirectoryOptions.CachingStrategyType.None;
                o.CacheSize = SiloOptions.ExternalDirectoryCacheSize;
            }
            else
            {
                o.CacheSize = cacheEntries;
            }
        });
    }

    /// <summary>Maps the gRPC services.</summary>
    public static WebApplication MapLoyaltyGateway(this WebApplication app)
    {
        app.UseGrpcProtocolErrorsAsInvalidArgument();
        app.UseKeyFirst();
        app.UseLoyaltyOpenApi();
        app.MapLoyaltyDashboard(app.Services.GetRequiredService<IOptions<DashboardSettings>>().Value);
        app.MapGrpcService<ProgramAdminService>();
        app.MapGrpcService<MembersService>();
        app.MapGrpcService<PurchasesService>();
        app.MapGrpcService<RedemptionsService>();
        app.MapGrpcService<AccessService>();
        app.MapGrpcService<EventsService>();
        app.MapGrpcService<WebhooksService>();
        app.MapGrpcService<ReportsService>();
        app.MapReportPage();
        app.MapGrpcReflectionService();
        app.MapGrpcHealthChecksService();
        return app;
    }

    /// <summary>Adds API keys, their refresh, quotas and the client-fault log.</summary>
    private static void AddLoyaltyAccess(this WebApplicationBuilder builder)
    {
        IConfiguration config = builder.Configuration;
        builder.Services.Configure<AuthOptions>(config.GetSection(AuthOptions.SectionName));
        builder.Services.AddOptions<QuotaOptions>().Bind(config.GetSection(QuotaOptions.SectionName))
            .Validate(q => q.Problem() is null, "Quotas: rates must be above 0 and bursts at least 1").ValidateOnStart();
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<KeyRegistry>();
        builder.Services.AddSingleton<AnonymousStreams>();
        builder.Services.AddSingleton<ClientFaults>();
        // A silo lifecycle stage: the keys load after the ledger has migrated the schema they live in.
        builder.Services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, AccessLifecycle>();
    }

    /// <summary>
    /// One engine on the loopback interface, or a cluster whose membership lives in the engine's
    /// PostgreSQL (the schema scripts carry Orleans' membership queries). SQLite serves one engine.
    /// </summary>
    private static void UseLoyaltyMembership(this ISiloBuilder siloBuilder, SiloOptions silo, StorageOptions storage)
    {
        if (silo.Membership == MembershipKind.Localhost)
        {
            siloBuilder.UseLocalhostClustering(silo.SiloPort, silo.GatewayPort, serviceId: storage.ServiceId, clusterId: silo.ClusterId);
            return;
        }

        if (storage.Provider != StorageProvider.Postgres)
        {
            throw new InvalidOperationException("Orleans:Membership=Postgres needs Storage:Provider=Postgres: the engines of a cluster share one PostgreSQL.");
        }

        IPAddress advertised = silo.AdvertisedAddress.Length == 0 ? IPAddress.Loopback
            : IPAddress.TryParse(silo.AdvertisedAddress, out IPAddress? address) ? address
            // A host name (a container's service name): its first IPv4 address.
            : Dns.GetHostAddresses(silo.AdvertisedAddress).FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
                ?? throw new InvalidOperationException($"Orleans:AdvertisedAddress '{silo.AdvertisedAddress}' has no IPv4 address.");
        siloBuilder.UseAdoNetClustering(o =>
        {
            o.Invariant = "Npgsql";
            o.ConnectionString = storage.ConnectionString;
        });
        siloBuilder.Configure<EndpointOptions>(o =>
        {
            o.AdvertisedIPAddress = advertised;
            o.SiloPort = silo.SiloPort;
            o.GatewayPort = silo.GatewayPort;
            // Listen on the advertised address's interfaces: loopback stays loopback; in a container, all.
            IPAddress listen = IPAddress.IsLoopback(advertised) ? advertised : IPAddress.Any;
            o.SiloListeningEndpoint = new IPEndPoint(listen, silo.SiloPort);
            o.GatewayListeningEndpoint = new IPEndPoint(listen, silo.GatewayPort);
        });
        siloBuilder.Configure<ClusterMembershipOptions>(o =>
        {
            TimeSpan probe = TimeSpan.FromSeconds(Math.Clamp(silo.FailureDetectionSeconds, 3, 60) / 3.0);
            o.ProbeTimeout = probe;
            o.NumMissedProbesLimit = 3;
            // A dead engine's row stays visible until it is cleaned up; refresh often enough that a
            // restarted engine finds the others quickly.
            o.TableRefreshTimeout = TimeSpan.FromSeconds(10);
            o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(10);
        });
    }
}
