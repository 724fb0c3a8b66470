using Loyalty.Host;
using Loyalty.Host.Reports;

WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = RebuildReportsCommand.ConfigurationArgs(args),
    // appsettings.json travels with the binaries; data paths stay relative to the caller's folder.
    ContentRootPath = AppContext.BaseDirectory,
});
if (RebuildReportsCommand.IsAsked(args))
{
    return await RebuildReportsCommand.RunAsync(builder.Configuration, args, Console.Out);
}

builder.AddLoyaltyEngine();

WebApplication app = builder.Build();
app.MapLoyaltyGateway();
app.Run();
return 0;
