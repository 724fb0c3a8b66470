using Loyalty.Storage;

namespace Loyalty.Tests.Infrastructure;

/// <summary>Command-line configuration for an engine on free loopback ports.</summary>
public static class EngineArgs
{
    public static string[] For(StorageOptions storage, int grpcPort) =>
    [
        $"--Kestrel:Endpoints:Grpc:Url=http://127.0.0.1:{grpcPort}",
        "--Kestrel:Endpoints:Grpc:Protocols=Http2",
        $"--Storage:Provider={storage.Provider}",
        $"--Storage:ConnectionString={storage.ConnectionString}",
        $"--Orleans:SiloPort={Ports.Free()}",
        $"--Orleans:GatewayPort={Ports.Free()}",
        "--Ledger:FlushIntervalMs=1",
        "--Logging:LogLevel:Default=Warning",
        $"--Auth:BootstrapOperatorKey={TestKeys.Operator}",
    ];
}
