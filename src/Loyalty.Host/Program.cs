using Loyalty.Host;

WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = args,
    // appsettings.json travels with the binaries; data paths stay relative to the caller's folder.
    ContentRootPath = AppContext.BaseDirectory,
});
builder.AddLoyaltyEngine();

WebApplication app = builder.Build();
app.MapLoyaltyGateway();
app.Run();
