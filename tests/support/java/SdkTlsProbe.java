// What the daemon does first against AWS, on the Java runtime under test: the AWS SDK's asynchronous DynamoDB client
// (Netty over the JDK's TLS, the client KCL builds for its lease table) signs a ListTables call and sends it to the
// HTTPS endpoint given as the only argument, trusting the JDK's default trust store (javax.net.ssl.trustStore when
// set). Prints the tables on success; any failure (a handshake the runtime cannot do, a missing class) exits non-zero
// with the exception. tests/integration/test_java_runtime.py compiles it against the KCL jars.
import java.net.URI;
import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;

public final class SdkTlsProbe {
    public static void main(String[] args) {
        try (DynamoDbAsyncClient client = DynamoDbAsyncClient.builder()
                .endpointOverride(URI.create(args[0]))
                .region(Region.US_EAST_1)
                .credentialsProvider(StaticCredentialsProvider.create(AwsBasicCredentials.create("probe", "probe")))
                .build()) {
            System.out.println("tables " + client.listTables().join().tableNames());
        }
    }
}
