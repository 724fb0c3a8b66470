using Loyalty.Storage;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Command-line configuration for an engine on free loopback ports.</summary>
public static class EngineArgs
{
    /// <summary>The arguments; the HTTP/JSON endpoint gets <paramref name="httpPort"/>, or a free port.</summary>
    public static string[] For(StorageOptions storage, int grpcPort, int? httpPort = null) =>
    [
        $"--Kestrel:Endpoints:Grpc:Url=http://127.0.0.1:{grpcPort}",
        "--Kestrel:Endpoints:Grpc:Protocols=Http2",
        $"--Kestrel:Endpoints:Http:Url=http://127.0.0.1:{httpPort ?? Ports.Free()}",
        $"--Storage:Provider={storage.Provider}",
        $"--Storage:ConnectionString={storage.ConnectionString}",
        $"--Orleans:SiloPort={Ports.Free()}",
        $"--Orleans:GatewayPort={Ports.Free()}",
        "--Ledger:FlushIntervalMs=1",
        "--Logging:LogLevel:Default=Warning",
        // Tests stop engines often; the drain delay is tested on its own.
        "--Gateway:DrainDelaySeconds=0",
        $"--Auth:BootstrapOperatorKey={TestKeys.Operator}",
    ];
}
